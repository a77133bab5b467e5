/*
 * Trading Helper chart page: play a past session. The #replay form's range (IST) and speed open
 * WS /api/ws/replay (api/ws_replay.py), which speaks the live protocol over stored ticks: this
 * module subscribes the chart's instrument and timeframe, empties the chart and hands each `tick`
 * and `candle` message to app.js as if it were live (window.TH_CHART.feed), so the page builds no
 * candle itself here either. `hole` messages (capture was down) become markers on the price series;
 * `replay_end` ends it, the replayed session staying drawn. The button then (or while playing)
 * goes back to live: the chart reloads its live view.
 * State is mirrored on #chart as data-replay (idle, playing, done, failed), data-replay-ticks and
 * data-replay-holes.
 */
'use strict';

(() => {
  const TH = window.TH_CHART;
  const form = document.getElementById('replay');
  if (!TH || !form) return;
  const { widthMs: WIDTH_MS, originMs: ORIGIN_MS } = window.TH_TIMEFRAMES;
  const chartEl = document.getElementById('chart');
  const button = form.querySelector('button');
  let ws = null, markers = null, holes = [], ticks = 0;

  function mirror(value) {
    chartEl.dataset.replay = value;
    chartEl.dataset.replayTicks = String(ticks);
    chartEl.dataset.replayHoles = String(holes.length);
    form.dataset.state = value;
    button.textContent = value === 'playing' ? 'Stop' : (TH.state.replaying ? 'Live' : 'Replay');
  }

  function showHole(hole) {
    const ms = Date.parse(hole.from);
    const tf = TH.state.tf;
    const bucket = ORIGIN_MS + Math.floor((ms - ORIGIN_MS) / WIDTH_MS[tf]) * WIDTH_MS[tf];
    holes.push({ time: TH.chartTime(bucket), position: 'aboveBar', shape: 'square', color: '#787b86',
                 text: `no capture ${hole.from.slice(11, 16)}–${hole.to.slice(11, 16)}` });
    if (!markers) markers = TH.LWC.createSeriesMarkers(TH.candleSeries, []);
    markers.setMarkers(holes);
  }

  function finish(value) {
    if (ws) { ws.onclose = null; ws.close(); ws = null; }
    mirror(value);
  }

  function stop() {
    finish('idle');
    if (markers) markers.setMarkers([]);
    TH.replay(false);
  }

  function play() {
    const instrument = TH.state.instrument;
    const from = form.elements.from.value, to = form.elements.to.value;
    if (!instrument || !from || !to) { mirror('failed'); return; }
    const q = new URLSearchParams({ from, to, speed: form.elements.speed.value });
    holes = []; ticks = 0;
    if (markers) markers.setMarkers([]);
    TH.replay(true);
    ws = TH.socket(`/api/ws/replay?${q}`);
    ws.onopen = () => ws.send(JSON.stringify({ action: 'subscribe', instruments: [`id:${instrument.id}`],
                                               intervals: [TH.state.tf] }));
    ws.onmessage = (event) => {
      const msg = JSON.parse(event.data);
      if (msg.type === 'tick') ticks += 1;
      if (msg.type === 'hole') showHole(msg);
      else if (msg.type === 'replay_end') { finish('done'); return; }
      else TH.feed(msg);
      chartEl.dataset.replayTicks = String(ticks);
    };
    ws.onclose = (event) => { ws = null; mirror(event.code === 1000 ? 'done' : 'failed'); };
    mirror('playing');
  }

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    if (ws || TH.state.replaying) stop(); else play();
  });
  // another instrument or timeframe picked: app.js has drawn its live view, the replay is over
  TH.on('loaded', () => {
    if (!TH.state.replaying) return;
    TH.state.replaying = false;
    finish('idle');
    if (markers) markers.setMarkers([]);
  });
  mirror('idle');
})();
