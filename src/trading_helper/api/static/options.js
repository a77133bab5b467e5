/*
 * Option chain view of the chart page: strikes around ATM, calls left and puts right (OI with its
 * bar, OI change, IV, delta, LTP), build-up colouring, live from WS /api/ws/options (the document of
 * GET /api/options/chain every two seconds). Click a call's or a put's cells to chart that
 * contract (through window.TH_CHART, the one hook app.js exposes). No build step, no library.
 * State for tests is mirrored on #options as data-* attributes (underlying, expiry, strikes, as-of).
 */
'use strict';

(() => {
  const AROUND_ATM = 15;  // strikes shown each side of ATM
  const BUILDUP = { long_buildup: 'long build-up', short_buildup: 'short build-up',
                    short_covering: 'short covering', long_unwinding: 'long unwinding' };
  const $ = (id) => document.getElementById(id);
  const panel = $('options'), toggle = $('options-toggle');
  if (!panel || !toggle || !window.TH_CHART) return;
  const chart = window.TH_CHART;
  const st = { underlying: 'NSE:NIFTY 50', expiry: '', ws: null, doc: null };

  panel.innerHTML = `
    <div class="opt-bar">
      <input id="opt-underlying" type="search" aria-label="Underlying" spellcheck="false">
      <select id="opt-expiry" aria-label="Expiry"></select>
      <span id="opt-summary" aria-live="polite"></span>
      <button type="button" id="opt-close" aria-label="Close the option chain">×</button>
    </div>
    <div class="opt-scroll"><table id="opt-table">
      <thead><tr>
        <th>OI</th><th>OI chg</th><th>IV</th><th>Δ</th><th>LTP</th><th class="strike">Strike</th>
        <th>LTP</th><th>Δ</th><th>IV</th><th>OI chg</th><th>OI</th>
      </tr></thead><tbody></tbody>
    </table></div>`;
  const input = $('opt-underlying'), select = $('opt-expiry'), summary = $('opt-summary');
  const tbody = panel.querySelector('tbody');

  const num = (v, digits = 2) => (v === null || v === undefined ? '–' : Number(v).toFixed(digits));
  const pct = (v) => (v === null || v === undefined ? '–' : (100 * v).toFixed(1));
  const big = (v) => (v === null || v === undefined ? '–' : Number(v).toLocaleString('en-IN'));
  const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' }[c]));

  async function api(path) {
    const res = await fetch(path, { headers: { Authorization: `Bearer ${chart.token()}` } });
    const body = await res.json().catch(() => ({}));
    if (!res.ok) throw new Error(body.detail || `${res.status}`);
    return body;
  }

  async function loadExpiries() {
    select.innerHTML = '';
    try {
      const body = await api(`/api/options/expiries?${new URLSearchParams({ underlying: st.underlying })}`);
      for (const e of body.expiries) select.add(new Option(e.expiry, e.expiry));
      st.underlying = body.underlying;
      input.value = body.underlying;
      st.expiry = body.expiries.length ? body.expiries[0].expiry : '';
      panel.dataset.underlying = st.underlying;
    } catch (err) {
      summary.textContent = `expiries: ${err.message}`;
      st.expiry = '';
    }
    connect();
  }

  function connect() {
    if (st.ws) { st.ws.onclose = null; st.ws.close(); st.ws = null; }
    if (panel.hidden || !st.expiry) return;
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const q = new URLSearchParams({ token: chart.token(), underlying: st.underlying, expiry: st.expiry });
    const ws = new WebSocket(`${scheme}://${location.host}/api/ws/options?${q}`);
    st.ws = ws;
    ws.onmessage = (event) => {
      const msg = JSON.parse(event.data);
      if (msg.type === 'chain') render(msg.data);
      else if (msg.type === 'error') summary.textContent = msg.detail;
    };
    ws.onclose = () => { if (st.ws === ws) setTimeout(connect, 2000); };
  }

  // one side of a strike: five cells carrying the contract (a click charts it) and its build-up
  function side(s, maxOi, kind) {
    if (!s) return '<td colspan="5" class="none"></td>';
    const bar = maxOi ? Math.round((100 * (s.oi || 0)) / maxOi) : 0;
    const at = ` data-id="${s.instrument_id}" data-kind="${kind}"`
      + (s.buildup ? ` data-buildup="${s.buildup}"` : '');
    const cells = [
      `<td${at} class="oi" style="--bar:${bar}%" title="${esc(s.instrument)}">${big(s.oi)}</td>`,
      `<td${at} class="${(s.oi_change || 0) >= 0 ? 'pos' : 'neg'}">${big(s.oi_change)}</td>`,
      `<td${at} title="${esc(s.iv_reason || '')}">${pct(s.iv)}</td>`,
      `<td${at}>${num(s.delta)}</td>`,
      `<td${at} title="${s.buildup ? BUILDUP[s.buildup] : ''}">${num(s.ltp)}</td>`,
    ];
    return (kind === 'ce' ? cells : cells.reverse()).join('');
  }

  function render(doc) {
    st.doc = doc;
    const atm = doc.atm_strike;
    const all = doc.strikes;
    const centre = Math.max(0, all.findIndex((r) => r.strike === atm));
    const rows = atm === null ? all : all.slice(Math.max(0, centre - AROUND_ATM), centre + AROUND_ATM + 1);
    const maxOi = Math.max(1, ...rows.flatMap((r) => [r.ce, r.pe].map((s) => (s && s.oi) || 0)));
    tbody.innerHTML = rows.map((r) => {
      const itmCall = doc.forward !== null && r.strike < doc.forward;
      return `<tr class="${r.strike === atm ? 'atm' : ''}${itmCall ? ' itm-ce' : ' itm-pe'}">`
        + `${side(r.ce, maxOi, 'ce')}<td class="strike">${r.strike}</td>${side(r.pe, maxOi, 'pe')}</tr>`;
    }).join('');
    summary.textContent = `spot ${num(doc.spot)} · fwd ${num(doc.forward)} · ATM ${atm ?? '–'}`
      + ` · PCR ${num(doc.pcr_oi)} · max pain ${doc.max_pain ?? '–'} · ATM IV ${pct(doc.atm_iv)}`
      + ` · straddle ${num(doc.straddle)}`
      + (doc.future ? ` · fut ${num(doc.future.ltp)} ${BUILDUP[doc.future.buildup] || ''}` : '')
      + ` · ${new Date(doc.as_of).toLocaleTimeString()}`;
    Object.assign(panel.dataset, { expiry: doc.expiry, strikes: String(rows.length), asOf: doc.as_of });
  }

  tbody.addEventListener('click', (event) => {
    const cell = event.target.closest('td[data-id]');
    if (cell) chart.load(Number(cell.dataset.id));
  });
  select.addEventListener('change', () => { st.expiry = select.value; connect(); });
  input.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && input.value.trim()) { st.underlying = input.value.trim(); loadExpiries(); }
  });
  function show(open) {
    panel.hidden = !open;
    toggle.setAttribute('aria-pressed', String(open));
    document.body.classList.toggle('with-options', open);
    if (open) loadExpiries(); else connect();
  }
  toggle.addEventListener('click', () => show(panel.hidden));
  $('opt-close').addEventListener('click', () => show(false));
  if (new URLSearchParams(location.hash.slice(1)).get('options')) show(true);
})();
