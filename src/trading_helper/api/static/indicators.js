/*
 * Trading Helper chart page: studies (indicators) over the chart's candles, from GET /api/indicators.
 * The page computes no study itself: every value comes from the server (TA-Lib and talipp there,
 * each with its warm-up), so the chart shows what the API and the alerts see.
 *
 * Overlays (EMA, SMA, VWAP, Bollinger, SuperTrend) are drawn on the price pane; RSI, MACD, ATR,
 * volume and OI each get a pane of their own (lightweight-charts v5 panes). The studies are typed
 * as specs (`ema:20,vwap,rsi:14,macd`) in #studies and remembered per instrument in localStorage.
 * Live: when the last candle moves (app.js's `candle` event) the tail is asked again, at most once
 * a second, so the forming bar's values follow it. Built on the hooks app.js exposes
 * (window.TH_CHART); the state is mirrored on #chart as data-studies, data-study-panes,
 * data-study-updates and data-study-error, and window.TH_INDICATORS.summary() lists what is drawn.
 */
'use strict';

(() => {
  const TH = window.TH_CHART;
  if (!TH) return;
  const { LWC, chart, chartTime } = TH;
  const { widthMs: WIDTH_MS, stepMs: STEP_MS } = window.TH_TIMEFRAMES;
  const KEY_PREFIX = 'trading-helper.studies.';
  const LIVE_REFRESH_MS = 1000;
  const COLORS = ['#f5a623', '#29b6f6', '#ab47bc', '#ffee58', '#66bb6a', '#ff7043', '#ec407a', '#8d6e63'];
  const UP = '#26a69a', DOWN = '#ef5350', UP_SOFT = 'rgba(38,166,154,0.5)', DOWN_SOFT = 'rgba(239,83,80,0.5)';
  // the price pane's share of the height against each study pane's
  const PRICE_STRETCH = 3;

  const input = document.getElementById('studies');
  const chartEl = document.getElementById('chart');

  // what is drawn: one entry per study, { spec, kind, pane, series: {output: api}, values: {output: Map(ms -> v)} }
  let drawn = [];
  let specs = '';
  let view = null;  // { instrumentId, tf, generation, fromMs } of the chart's current series
  let updates = 0;
  let liveTimer = null, liveBusy = false;

  const storageKey = (id) => KEY_PREFIX + id;

  function mirror(error) {
    chartEl.dataset.studies = specs;
    chartEl.dataset.studyPanes = String(chart.panes().length);
    chartEl.dataset.studyUpdates = String(updates);
    chartEl.dataset.studyError = error || '';
    input.setAttribute('aria-invalid', String(Boolean(error)));
    input.title = error || '';
  }

  function clear() {
    for (const study of drawn) for (const s of Object.values(study.series)) chart.removeSeries(s);
    drawn = [];
    while (chart.panes().length > 1) chart.removePane(chart.panes().length - 1);
    TH.volumeSeries.applyOptions({ visible: true });
  }

  // -- series for a study, by its kind (its outputs and placement are the answer's) ------------------
  function line(pane, color, extra = {}) {
    return chart.addSeries(LWC.LineSeries, {
      color, lineWidth: 1.5, priceLineVisible: false, lastValueVisible: true, crosshairMarkerVisible: false, ...extra,
    }, pane);
  }

  function histogram(pane, extra = {}) {
    return chart.addSeries(LWC.HistogramSeries, { priceLineVisible: false, lastValueVisible: false, ...extra }, pane);
  }

  function buildSeries(answer, index, pane) {
    const color = COLORS[index % COLORS.length];
    const title = answer.study;
    switch (answer.kind) {
      case 'bb':
        return {
          upper: line(pane, color, { lineStyle: LWC.LineStyle.Dashed, title }),
          middle: line(pane, color, { lineStyle: LWC.LineStyle.Dotted, lastValueVisible: false }),
          lower: line(pane, color, { lineStyle: LWC.LineStyle.Dashed, lastValueVisible: false }),
        };
      case 'supertrend':  // one line, coloured by its direction
        return { supertrend: line(pane, UP, { lineWidth: 2, title }) };
      case 'macd':
        return {
          hist: histogram(pane),
          macd: line(pane, '#29b6f6', { title }),
          signal: line(pane, '#f5a623', { lastValueVisible: false }),
        };
      case 'rsi': {
        const series = line(pane, color, { title });
        for (const level of [30, 70]) {
          series.createPriceLine({ price: level, color: '#787b86', lineStyle: LWC.LineStyle.Dotted, lineWidth: 1,
                                   axisLabelVisible: false });
        }
        return { rsi: series };
      }
      case 'volume':
        TH.volumeSeries.applyOptions({ visible: false });  // the pane replaces the overlay
        return { volume: histogram(pane, { priceFormat: { type: 'volume' }, title }) };
      case 'oi':
        return {
          change: histogram(pane, { priceScaleId: 'oi-change' }),
          oi: line(pane, color, { title }),
        };
      default:  // one line per output (ema, sma, vwap, atr ...)
        return Object.fromEntries(Object.keys(answer.series).map((name, i) => [name, line(pane, color, i ? {} : { title })]));
    }
  }

  function point(study, name, ms, value) {
    const p = { time: chartTime(ms), value };
    if (study.kind === 'supertrend') {
      p.color = study.values.direction.get(ms) > 0 ? UP : DOWN;
    } else if (name === 'hist' || name === 'change') {
      p.color = value >= 0 ? UP_SOFT : DOWN_SOFT;
    } else if (study.kind === 'volume') {
      const candle = TH.state.candles.find((c) => c.ms === ms);
      p.color = candle && candle.close < candle.open ? DOWN_SOFT : UP_SOFT;
    }
    return p;
  }

  function draw(study) {
    for (const [name, series] of Object.entries(study.series)) {
      const values = [...study.values[name].entries()].filter(([, v]) => v !== null).sort((a, b) => a[0] - b[0]);
      series.setData(values.map(([ms, v]) => point(study, name, ms, v)));
    }
  }

  // -- answers ------------------------------------------------------------------------------------
  function merge(body) {
    const times = body.time.map((t) => Date.parse(t));
    if (!drawn.length) {
      let pane = 0;
      drawn = body.studies.map((answer, index) => {
        const at = answer.placement === 'pane' ? ++pane : 0;
        const values = Object.fromEntries(Object.keys(answer.series).map((name) => [name, new Map()]));
        return { spec: answer.study, kind: answer.kind, pane: at, series: buildSeries(answer, index, at), values };
      });
      chart.panes().forEach((p, i) => p.setStretchFactor(i ? 1 : PRICE_STRETCH));
    }
    body.studies.forEach((answer, index) => {
      const study = drawn[index];
      if (!study || study.spec !== answer.study) return;
      for (const [name, values] of Object.entries(answer.series)) {
        const map = study.values[name];
        values.forEach((v, i) => map.set(times[i], v));
      }
      draw(study);
    });
    updates += 1;
  }

  async function fetchRange(fromMs, toMs) {
    const q = new URLSearchParams({ instrument: `id:${view.instrumentId}`, interval: view.tf, studies: specs,
                                    from: new Date(fromMs).toISOString(), to: new Date(toMs).toISOString() });
    return TH.api(`/api/indicators?${q}`);
  }

  // the range in steps the API accepts (each within the interval's maximum span)
  async function load(fromMs, toMs) {
    const generation = view && view.generation;
    const wanted = specs;
    for (let start = fromMs; start < toMs; start += STEP_MS[view.tf]) {
      const body = await fetchRange(start, Math.min(toMs, start + STEP_MS[view.tf]));
      if (!view || view.generation !== generation || specs !== wanted) return false;
      merge(body);
    }
    return true;
  }

  async function apply(text, { save }) {
    specs = text.split(',').map((s) => s.trim()).filter(Boolean).join(',');
    input.value = specs;
    clear();
    if (!view) { mirror(); return; }
    if (!specs) {
      if (save) localStorage.removeItem(storageKey(view.instrumentId));
      mirror();
      return;
    }
    try {
      const fromMs = Math.min(view.fromMs, TH.state.oldestMs ?? view.fromMs);
      if (await load(fromMs, Date.now() + 1000) && save) localStorage.setItem(storageKey(view.instrumentId), specs);
      mirror();
    } catch (err) {
      clear();
      mirror(err.message);
    }
  }

  // -- the page's events -----------------------------------------------------------------------------
  TH.on('loaded', (detail) => {
    view = { instrumentId: detail.instrument.id, tf: detail.tf, generation: detail.generation, fromMs: detail.fromMs };
    apply(localStorage.getItem(storageKey(view.instrumentId)) || '', { save: false });
  });

  TH.on('older', (detail) => {
    if (!view || !specs || !drawn.length || detail.generation !== view.generation) return;
    load(detail.fromMs, detail.toMs).then(() => mirror(), (err) => mirror(err.message));
  });

  // the last candle moved: ask for the tail (the bar before it too, which may just have closed)
  TH.on('candle', (detail) => {
    if (!view || !specs || !drawn.length || detail.generation !== view.generation || liveTimer) return;
    liveTimer = setTimeout(async () => {
      liveTimer = null;
      if (liveBusy) return;
      liveBusy = true;
      const candles = TH.state.candles;
      const last = candles[candles.length - 1];
      const from = candles.length > 1 ? candles[candles.length - 2].ms : last.ms;
      try {
        const generation = view.generation, wanted = specs;
        const body = await fetchRange(from, last.ms + WIDTH_MS[view.tf]);
        if (view.generation === generation && specs === wanted && drawn.length) merge(body);
        mirror();
      } catch (err) {
        mirror(err.message);
      } finally {
        liveBusy = false;
      }
    }, LIVE_REFRESH_MS);
  });

  input.addEventListener('keydown', (event) => {
    if (event.key === 'Enter') { event.preventDefault(); apply(input.value, { save: true }); }
  });
  input.addEventListener('change', () => { if (input.value.trim() !== specs) apply(input.value, { save: true }); });

  window.TH_INDICATORS = Object.freeze({
    apply: (text) => apply(text, { save: true }),
    // what is drawn: per study its pane and, per output, how many points and the last one
    summary: () => drawn.map((study) => ({
      spec: study.spec, kind: study.kind, pane: study.pane,
      outputs: Object.fromEntries(Object.entries(study.series).map(([name, series]) => {
        const data = series.data();
        const last = data[data.length - 1];
        return [name, { points: data.length, last: last ? last.value : null, pane: series.getPane().paneIndex() }];
      })),
    })),
  });
  mirror();
})();
