/*
 * Trading Helper chart page: one instrument and timeframe, candles with volume from GET /api/candles,
 * older history loaded (and backfilled by the API) when scrolling back, the forming candle moved by
 * the server's `candle` messages from WS /api/ws/ticks (built by api/forming.py by the stored
 * candles' rules: this page never builds a candle or a volume itself). No build step: plain
 * JavaScript over the vendored standalone lightweight-charts (window.LightweightCharts), and the
 * timeframe facts from static/timeframes.js (generated from trading_helper/timeframes.py).
 *
 * The API token comes from the address (#token=...) once, then from localStorage; it is sent as
 * "Authorization: Bearer" and as ?token= on the WebSocket (browsers cannot set its headers).
 * State for tests and scripts is mirrored on #chart as data-* attributes.
 */
'use strict';

(() => {
  const LWC = window.LightweightCharts;
  // bucket widths, the shared bucket origin and the load steps: trading_helper/timeframes.py
  const { widthMs: WIDTH_MS, originMs: ORIGIN_MS, stepMs: STEP_MS } = window.TH_TIMEFRAMES;
  // The chart library shows times as UTC: shift them so it shows IST (India has no daylight saving).
  const IST_OFFSET_S = 19800;
  const EMPTY_STEPS_BEFORE_GIVING_UP = 3;
  const VISIBLE_BARS = 150;
  const TOKEN_KEY = 'trading-helper.token';
  const LAST_KEY = 'trading-helper.last';
  // this browser's choice of source where live and broker candles both exist (GET /api/candles?prefer=)
  const PREFER_KEY = 'trading-helper.prefer';
  const UP = '#26a69a', DOWN = '#ef5350', UP_VOL = 'rgba(38,166,154,0.5)', DOWN_VOL = 'rgba(239,83,80,0.5)';

  const $ = (id) => document.getElementById(id);
  const el = { chart: $('chart'), legend: $('legend'), search: $('search'), results: $('results'),
               status: $('status'), timeframes: $('timeframes'), tokenForm: $('token-form'),
               tokenInput: $('token-input') };

  const state = {
    instrument: null, tf: '5m', candles: [], oldestMs: null, loadingOlder: false, emptySteps: 0,
    generation: 0, liveFromMs: Infinity, ticks: 0,
  };

  const bucketStart = (ms, tf) => ORIGIN_MS + Math.floor((ms - ORIGIN_MS) / WIDTH_MS[tf]) * WIDTH_MS[tf];
  const chartTime = (ms) => Math.floor(ms / 1000) + IST_OFFSET_S;
  const iso = (ms) => new Date(ms).toISOString();

  // -- token --------------------------------------------------------------------------------
  let token = '';
  const params = new URLSearchParams(location.hash.slice(1));
  if (params.get('token')) {
    localStorage.setItem(TOKEN_KEY, params.get('token'));
    params.delete('token');  // keep it out of bookmarks, history and screenshots
    const rest = params.toString();
    history.replaceState(null, '', location.pathname + location.search + (rest ? `#${rest}` : ''));
  }
  token = localStorage.getItem(TOKEN_KEY) || '';

  function askToken(message) {
    setStatus(message || 'the API needs its token');
    el.tokenForm.hidden = false;
    el.tokenInput.focus();
  }

  el.tokenForm.addEventListener('submit', (event) => {
    event.preventDefault();
    token = el.tokenInput.value.trim();
    localStorage.setItem(TOKEN_KEY, token);
    el.tokenForm.hidden = true;
    start();
  });

  async function api(path) {
    const res = await fetch(path, { headers: { Authorization: `Bearer ${token}` } });
    if (res.status === 401 || res.status === 403) {
      askToken('the API refused the token');
      throw new Error('token refused');
    }
    const body = await res.json().catch(() => ({}));
    if (!res.ok) throw new Error(`${res.status}: ${body.detail || body.message || res.statusText}`);
    return body;
  }

  // The status line: where the live feed stands, then what the page is doing. Its first word and
  // the dot (#status[data-ws], drawn by app.css) come from the one WebSocket state, so the text
  // never says "live" beside a dot that says disconnected.
  const FEED_WORDS = { open: 'live', connecting: 'connecting…', closed: 'disconnected' };
  const status = { note: '', lastTickMs: null };

  function renderStatus() {
    const feed = FEED_WORDS[el.status.dataset.ws] || '';
    const tick = status.lastTickMs === null ? ''
      : `last tick ${new Date(status.lastTickMs).toLocaleTimeString('en-IN', { timeZone: 'Asia/Kolkata' })} IST`;
    el.status.textContent = [feed, status.note || tick].filter(Boolean).join(' · ');
  }

  function setStatus(text) { status.note = text; renderStatus(); }

  // -- chart ----------------------------------------------------------------------------------
  const chart = LWC.createChart(el.chart, {
    autoSize: true,
    layout: { background: { type: LWC.ColorType.Solid, color: '#131722' }, textColor: '#d1d4dc' },
    grid: { vertLines: { color: '#1f2430' }, horzLines: { color: '#1f2430' } },
    crosshair: { mode: LWC.CrosshairMode.Normal },
    timeScale: { timeVisible: true, secondsVisible: false, rightOffset: 4, borderColor: '#2a2e39' },
    rightPriceScale: { borderColor: '#2a2e39' },
  });
  const candleSeries = chart.addSeries(LWC.CandlestickSeries, {
    upColor: UP, downColor: DOWN, wickUpColor: UP, wickDownColor: DOWN, borderVisible: false,
  });
  candleSeries.priceScale().applyOptions({ scaleMargins: { top: 0.08, bottom: 0.3 } });
  const volumeSeries = chart.addSeries(LWC.HistogramSeries, {
    priceFormat: { type: 'volume' }, priceScaleId: 'volume', lastValueVisible: false, priceLineVisible: false,
  });
  chart.priceScale('volume').applyOptions({ scaleMargins: { top: 0.75, bottom: 0 } });

  // Hooks for static/indicators.js (the studies) and static/options.js: the chart, and the page's events: `loaded` (a
  // new instrument or timeframe drawn), `older` (history prepended), `candle` (the last bar moved).
  // static/alerts.js also hears `alert` (a rule fired, from the WebSocket) and sends with `request`.
  const listeners = { loaded: [], older: [], candle: [], alert: [] };
  const emit = (name, detail) => {
    for (const fn of listeners[name]) { try { fn(detail); } catch (err) { console.warn(name, err); } }
  };
  // Hooks for static/replay.js: `socket(path)` opens one of the API's WebSockets with the token;
  // `replay(true)` empties the chart and stops taking live messages, `feed(msg)` applies a replayed
  // message as a live one, `replay(false)` reloads the chart and takes live messages again.
  window.TH_CHART = Object.freeze({
    LWC, chart, candleSeries, volumeSeries, chartTime, api: (path) => api(path), state,
    request: (path, init = {}) => fetch(path, { ...init, headers: { ...(init.headers || {}),
      Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' } }),
    on: (name, fn) => listeners[name].push(fn),
    // for static/options.js: chart a contract (a click on the chain), the API token
    load: (id) => load(id, state.tf), token: () => token,
    socket: (path) => new WebSocket(`${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}${path}`
                                    + `${path.includes('?') ? '&' : '?'}token=${encodeURIComponent(token)}`),
    replay: (on) => {
      state.replaying = on;
      if (on) { Object.assign(state, { candles: [], liveFromMs: -Infinity, ticks: 0 }); redrawAll(); }
      else if (state.instrument) load(state.instrument.id, state.tf, state.instrument);
    },
    feed: (msg) => onMessage(msg, true),
  });

  const bar = (c) => ({ time: chartTime(c.ms), open: c.open, high: c.high, low: c.low, close: c.close });
  const volumeBar = (c) => ({ time: chartTime(c.ms), value: c.volume, color: c.close >= c.open ? UP_VOL : DOWN_VOL });
  const parseCandle = (c) => ({ ms: Date.parse(c.time), open: c.open, high: c.high, low: c.low, close: c.close,
                                volume: c.volume || 0 });

  function mirror() {
    const last = state.candles[state.candles.length - 1];
    const d = el.chart.dataset;
    d.candles = String(state.candles.length);
    d.instrument = state.instrument ? String(state.instrument.id) : '';
    d.timeframe = state.tf;
    d.ticks = String(state.ticks);
    d.oldest = state.candles.length ? iso(state.candles[0].ms) : '';
    d.lastTime = last ? iso(last.ms) : '';
    d.lastClose = last ? String(last.close) : '';
    d.lastHigh = last ? String(last.high) : '';
    d.lastLow = last ? String(last.low) : '';
    d.lastVolume = last ? String(last.volume) : '';
  }

  function showLegend(c) {
    if (!state.instrument) { el.legend.textContent = ''; return; }
    if (!state.instrument.exchange) {  // loaded by id: its name arrives with the candles
      el.legend.innerHTML = '<span class="loading">loading…</span>';
      return;
    }
    const name = `${state.instrument.exchange}:${state.instrument.tradingsymbol} · ${state.tf}`;
    if (!c) { el.legend.innerHTML = `<span class="symbol"></span>`; el.legend.firstChild.textContent = name; return; }
    const dir = c.close >= c.open ? 'up' : 'down';
    const fmt = (v) => Number(v).toLocaleString('en-IN', { maximumFractionDigits: 2 });
    el.legend.innerHTML = '<span class="symbol"></span>'
      + `<span class="${dir}">O ${fmt(c.open)} H ${fmt(c.high)} L ${fmt(c.low)} C ${fmt(c.close)}</span>`
      + ` <span>V ${fmt(c.volume)}</span>`;
    el.legend.firstChild.textContent = name;
  }

  chart.subscribeCrosshairMove((param) => {
    const hovered = param && param.time !== undefined
      ? state.candles.find((c) => chartTime(c.ms) === param.time) : null;
    showLegend(hovered || state.candles[state.candles.length - 1]);
  });

  function redrawAll() {
    candleSeries.setData(state.candles.map(bar));
    volumeSeries.setData(state.candles.map(volumeBar));
    mirror();
    showLegend(state.candles[state.candles.length - 1]);
  }

  function redrawLast() {
    const last = state.candles[state.candles.length - 1];
    candleSeries.update(bar(last));
    volumeSeries.update(volumeBar(last));
    mirror();
    showLegend(last);
  }

  function showLatest() {
    const n = state.candles.length;
    if (n > VISIBLE_BARS) chart.timeScale().setVisibleLogicalRange({ from: n - VISIBLE_BARS, to: n + 4 });
    else chart.timeScale().fitContent();
  }

  // -- history --------------------------------------------------------------------------------
  async function fetchCandles(fromMs, toMs) {
    // `id:N` is our id; a bare number would be the broker's token (the reference grammar)
    const q = new URLSearchParams({ instrument: `id:${state.instrument.id}`, interval: state.tf,
                                    from: iso(fromMs), to: iso(toMs),
                                    prefer: localStorage.getItem(PREFER_KEY) === 'broker' ? 'broker' : 'live' });
    const body = await api(`/api/candles?${q}`);
    return { instrument: body.instrument, candles: (body.candles || []).map(parseCandle) };
  }

  async function load(instrumentId, tf, known = null) {
    // `known`: the instrument as the search listed it, so the legend names it while loading
    const generation = ++state.generation;
    const instrument = known && known.id === instrumentId ? known : { id: instrumentId, exchange: '', tradingsymbol: '' };
    Object.assign(state, { instrument, tf, candles: [], emptySteps: 0, loadingOlder: false, ticks: 0 });
    status.lastTickMs = null;
    el.chart.dataset.ready = 'false';
    markTimeframe();
    redrawAll();
    setStatus('loading candles…');
    const now = Date.now();
    const from = bucketStart(now - STEP_MS[tf], tf);
    let answer;
    try {
      answer = await fetchCandles(from, now + 1000);
    } catch (err) {
      if (generation !== state.generation) return;
      setStatus(`candles: ${err.message}`);
      if (!state.instrument.exchange) el.legend.textContent = '';  // nothing is loading any more
      return;
    }
    if (generation !== state.generation) return;  // the user picked something else meanwhile
    state.instrument = answer.instrument;
    state.candles = answer.candles;
    state.oldestMs = from;
    state.liveFromMs = bucketStart(now, tf) + WIDTH_MS[tf];
    el.search.value = `${answer.instrument.exchange}:${answer.instrument.tradingsymbol}`;
    localStorage.setItem(LAST_KEY, JSON.stringify({ id: answer.instrument.id, tf }));
    redrawAll();
    showLatest();
    el.chart.dataset.ready = 'true';
    setStatus(state.candles.length ? `${state.candles.length} candles` : 'no candles in this range yet');
    subscribe();
    emit('loaded', { instrument: state.instrument, tf, fromMs: from, toMs: now + 1000, generation });
  }

  async function loadOlder() {
    // not while a load is drawing its first window: only a user's pan asks for older bars
    if (state.loadingOlder || state.replaying || !state.instrument || el.chart.dataset.ready !== 'true'
        || state.emptySteps >= EMPTY_STEPS_BEFORE_GIVING_UP) return;
    state.loadingOlder = true;
    const generation = state.generation;
    const to = state.oldestMs;
    const from = bucketStart(to - STEP_MS[state.tf], state.tf);
    try {
      const { candles } = await fetchCandles(from, to);
      if (generation !== state.generation || state.replaying) return;
      const first = state.candles.length ? state.candles[0].ms : Infinity;
      const older = candles.filter((c) => c.ms < first);
      state.oldestMs = from;
      state.emptySteps = older.length ? 0 : state.emptySteps + 1;
      if (older.length) {
        const range = chart.timeScale().getVisibleLogicalRange();
        state.candles = older.concat(state.candles);
        redrawAll();
        // keep the bars the user is looking at where they were
        if (range) chart.timeScale().setVisibleLogicalRange({ from: range.from + older.length, to: range.to + older.length });
        emit('older', { fromMs: from, toMs: to, generation });
      }
    } catch (err) {
      setStatus(`older candles: ${err.message}`);
    } finally {
      state.loadingOlder = false;
    }
  }

  chart.timeScale().subscribeVisibleLogicalRangeChange((range) => {
    if (range && range.from < 10) loadOlder();
  });

  // -- live -----------------------------------------------------------------------------------
  let ws = null;
  let wsDelayMs = 1000;
  let watching = null;

  function setWs(value) { el.status.dataset.ws = value; renderStatus(); }

  function connect() {
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    setWs('connecting');
    ws = new WebSocket(`${scheme}://${location.host}/api/ws/ticks?token=${encodeURIComponent(token)}`);
    ws.onopen = () => { wsDelayMs = 1000; watching = null; setWs('open'); subscribe(); };
    ws.onmessage = (event) => {
      try { onMessage(JSON.parse(event.data)); } catch (err) { console.warn('bad live message', err); }
    };
    ws.onclose = (event) => {
      setWs('closed');
      if (event.code === 1008) { askToken('the live feed refused the token'); return; }
      setTimeout(connect, wsDelayMs);
      wsDelayMs = Math.min(wsDelayMs * 2, 15000);
    };
  }

  function subscribe() {
    if (!ws || ws.readyState !== WebSocket.OPEN || !state.instrument) return;
    const id = state.instrument.id;
    if (watching !== null && watching !== id) ws.send(JSON.stringify({ action: 'unsubscribe', instruments: [`id:${watching}`] }));
    ws.send(JSON.stringify({ action: 'subscribe', instruments: [`id:${id}`], intervals: [state.tf] }));
    watching = id;
  }

  function onMessage(msg, replayed = false) {
    if (!state.instrument || el.chart.dataset.ready !== 'true' || Boolean(state.replaying) !== replayed) return;
    if (msg.type === 'tick' && msg.data && msg.data.instrument_id === state.instrument.id) applyTick(msg.data);
    else if (msg.type === 'candle' && msg.interval === state.tf && msg.data
             && msg.data.instrument_id === state.instrument.id) applyCandle(parseCandle(msg.data));
    else if (msg.type === 'alert') emit('alert', msg.data);
    else if (msg.type === 'error') setStatus(`live: ${msg.detail}`);
  }

  function applyTick(tick) {
    // a tick only says the feed is alive; the candles it moves arrive as `candle` messages
    const ms = Date.parse(tick.exchange_ts);
    if (!Number.isFinite(ms)) return;
    state.ticks += 1;
    el.chart.dataset.ticks = String(state.ticks);
    status.note = '';
    status.lastTickMs = ms;
    renderStatus();
  }

  function applyCandle(candle) {
    if (!Number.isFinite(candle.ms)) return;
    const last = state.candles[state.candles.length - 1];
    if (last && candle.ms < last.ms) return;  // a closed bar: the next load has it
    if (last && candle.ms === last.ms && candle.ms < state.liveFromMs && !last.live) {
      // The bar the REST read already held: the server's candle covers what its hub relayed since
      // it began following the instrument (this page's subscription, after the read), so the bar
      // is the read's plus the server's: the read's open, both extremes, the server's close, and
      // the read's volume plus the server's (both counted by the server's one volume rule). When
      // another page already had the hub following, the sum counts that overlap twice until the
      // next read replaces the bar.
      if (last.readVolume === undefined) last.readVolume = last.volume;
      Object.assign(last, { high: Math.max(last.high, candle.high), low: Math.min(last.low, candle.low),
                            close: candle.close, volume: last.readVolume + candle.volume });
    } else if (last && candle.ms === last.ms) {
      state.candles[state.candles.length - 1] = Object.assign(candle, { live: true });
    } else {
      state.candles.push(Object.assign(candle, { live: true }));
    }
    redrawLast();
    emit('candle', { candles: state.candles, generation: state.generation });
  }

  // -- pickers ----------------------------------------------------------------------------------
  function markTimeframe() {
    for (const button of el.timeframes.querySelectorAll('button')) {
      button.setAttribute('aria-pressed', String(button.dataset.tf === state.tf));
    }
  }

  el.timeframes.addEventListener('click', (event) => {
    const tf = event.target.dataset && event.target.dataset.tf;
    if (tf && tf !== state.tf && state.instrument) load(state.instrument.id, tf, state.instrument);
  });

  let searchTimer = null;
  let results = [];
  let selected = -1;
  let unmatched = '';  // the text a finished search found nothing for

  function renderResults() {
    if (!results.length && unmatched) {
      const li = document.createElement('li');
      li.className = 'empty';
      li.setAttribute('aria-disabled', 'true');
      li.textContent = `no results for ${unmatched}`;
      el.results.replaceChildren(li);
      el.results.hidden = false;
      return;
    }
    el.results.replaceChildren(...results.map((item, index) => {
      const li = document.createElement('li');
      li.setAttribute('role', 'option');
      li.setAttribute('aria-selected', String(index === selected));
      const symbol = document.createElement('span');
      symbol.textContent = item.tradingsymbol;
      const exchange = document.createElement('span');
      exchange.className = 'exchange';
      exchange.textContent = [item.exchange, item.name].filter(Boolean).join(' · ');
      li.append(symbol, exchange);
      li.addEventListener('mousedown', (event) => { event.preventDefault(); choose(index); });
      return li;
    }));
    el.results.hidden = results.length === 0;
  }

  function choose(index) {
    const item = results[index];
    if (!item) return;
    results = [];
    unmatched = '';
    renderResults();
    el.search.blur();
    load(item.id, state.tf, item);
  }

  async function search(prefix) {
    const q = new URLSearchParams({ limit: '20' });
    // "NSE:REL" searches REL on NSE, as the box shows a chosen instrument
    const [exchange, symbol] = prefix.includes(':') ? prefix.split(':', 2) : ['', prefix];
    if (symbol) q.set('q', symbol.toUpperCase());
    if (exchange) q.set('exchange', exchange.toUpperCase());
    try {
      const body = await api(`/api/instruments?${q}`);
      if (el.search.value.trim() !== prefix) return;  // typed on meanwhile
      results = body.items || [];
      selected = results.length ? 0 : -1;
      unmatched = results.length ? '' : prefix;
      renderResults();
    } catch (err) {
      setStatus(`search: ${err.message}`);
    }
  }

  el.search.addEventListener('input', () => {
    clearTimeout(searchTimer);
    const prefix = el.search.value.trim();
    if (!prefix) { results = []; unmatched = ''; renderResults(); return; }
    searchTimer = setTimeout(() => search(prefix), 150);
  });
  el.search.addEventListener('focus', () => el.search.select());
  el.search.addEventListener('blur', () => { results = []; unmatched = ''; renderResults(); });
  el.search.addEventListener('keydown', (event) => {
    if (event.key === 'ArrowDown' || event.key === 'ArrowUp') {
      event.preventDefault();
      if (!results.length) return;
      selected = (selected + (event.key === 'ArrowDown' ? 1 : results.length - 1)) % results.length;
      renderResults();
    } else if (event.key === 'Enter') {
      event.preventDefault();
      choose(selected);
    } else if (event.key === 'Escape') {
      results = [];
      unmatched = '';
      renderResults();
    }
  });

  const preferPicker = $('prefer');
  if (preferPicker) {
    preferPicker.value = localStorage.getItem(PREFER_KEY) === 'broker' ? 'broker' : 'live';
    preferPicker.addEventListener('change', () => {
      localStorage.setItem(PREFER_KEY, preferPicker.value);
      if (state.instrument) load(state.instrument.id, state.tf, state.instrument);
    });
  }

  // -- start ------------------------------------------------------------------------------------
  async function start() {
    if (!token) { askToken(); return; }
    const saved = JSON.parse(localStorage.getItem(LAST_KEY) || 'null');
    const tf = WIDTH_MS[params.get('tf')] ? params.get('tf') : (saved && WIDTH_MS[saved.tf] ? saved.tf : '5m');
    let id = Number(params.get('instrument')) || (saved && saved.id) || null;
    if (!id) {
      try {
        const first = await api('/api/instruments?limit=1');
        id = first.items && first.items.length ? first.items[0].id : null;
      } catch (err) {
        setStatus(`instruments: ${err.message}`);
        return;
      }
    }
    if (ws === null) connect();
    if (id) load(id, tf);
    else setStatus('no instruments yet: sync or subscribe some first');
  }

  state.tf = WIDTH_MS[params.get('tf')] ? params.get('tf') : state.tf;
  markTimeframe();
  start();
})();
