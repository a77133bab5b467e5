/*
 * Trading Helper chart page: price alerts, over /api/alerts.
 *
 * Alt+click on the chart puts a dashed price line where you clicked and fills the form of the
 * #alerts panel: "LTP crosses above/below <price>" (above when the price is over the last close);
 * "Create" stores it as a tick rule (POST /api/alerts) with the chosen repeat. The instrument's
 * rules are drawn as price lines and listed; a rule's "history" shows its triggers and each
 * delivery attempt (GET /api/alerts/{id}/history); "×" deletes it. A rule that fires reaches the
 * page on the WebSocket (app.js's `alert` event) and is shown at the top of the panel.
 * Built on the hooks app.js exposes (window.TH_CHART); the state is mirrored on #alerts as
 * data-rules, data-fired and data-error.
 */
'use strict';

(() => {
  const TH = window.TH_CHART;
  if (!TH) return;
  const panel = document.getElementById('alerts');
  let view = null;      // the instrument id the rules are listed for
  let lines = [];       // price lines drawn for the listed rules
  let draft = null;     // { price, line } of an Alt+click
  let fired = 0;

  const text = (tag, value, cls) => {
    const node = document.createElement(tag);
    node.textContent = value;
    if (cls) node.className = cls;
    return node;
  };

  function error(message) {
    panel.dataset.error = message || '';
    const box = panel.querySelector('.alerts-error');
    if (box) box.textContent = message || '';
  }

  async function call(path, init) {
    const res = await TH.request(path, init);
    const body = res.status === 204 ? null : await res.json();
    if (!res.ok) throw new Error((body && body.detail) || `HTTP ${res.status}`);
    return body;
  }

  function clearLines() {
    for (const line of lines) TH.candleSeries.removePriceLine(line);
    lines = [];
  }

  function render(rules) {
    panel.replaceChildren();
    panel.hidden = false;
    panel.append(text('h2', 'Alerts'));
    const form = document.createElement('form');
    form.className = 'alerts-form';
    const label = text('span', draft ? `LTP crosses ${draftOp()} ${draft.price}` : 'Alt+click the chart to set a price');
    const repeat = document.createElement('select');
    repeat.setAttribute('aria-label', 'Repeat');
    for (const value of ['once', 'every']) repeat.append(new Option(value, value));
    const create = text('button', 'Create');
    create.type = 'submit';
    create.disabled = !draft;
    form.append(label, repeat, create);
    form.addEventListener('submit', (event) => { event.preventDefault(); createRule(repeat.value); });
    panel.append(form, text('div', '', 'alerts-error'));
    const list = document.createElement('ul');
    for (const rule of rules) {
      const item = document.createElement('li');
      item.dataset.rule = String(rule.id);
      item.append(text('span', `${rule.condition}${rule.enabled ? '' : ' (done)'} · fired ${rule.fired_count}`));
      const history = text('button', 'history');
      history.type = 'button';
      history.addEventListener('click', () => showHistory(rule.id, item));
      const remove = text('button', '×');
      remove.type = 'button';
      remove.setAttribute('aria-label', `delete alert ${rule.id}`);
      remove.addEventListener('click', () => deleteRule(rule.id));
      item.append(history, remove);
      list.append(item);
      if (rule.on === 'tick' && rule.left === 'ltp' && rule.value !== null && rule.enabled) {
        lines.push(TH.candleSeries.createPriceLine({ price: rule.value, color: '#f5a623', lineWidth: 1,
                                                     lineStyle: 2, axisLabelVisible: true, title: `alert ${rule.id}` }));
      }
    }
    panel.append(list);
    panel.dataset.rules = String(rules.length);
    panel.dataset.fired = String(fired);
  }

  function draftOp() {
    const last = TH.state.candles[TH.state.candles.length - 1];
    return !last || draft.price >= last.close ? 'crosses_above' : 'crosses_below';
  }

  async function refresh() {
    if (!TH.state.instrument) return;
    view = TH.state.instrument.id;
    try {
      const body = await call(`/api/alerts?instrument=id:${view}`);
      clearLines();
      render(body.items);
      error('');
    } catch (err) { error(String(err.message || err)); }
  }

  async function createRule(repeat) {
    if (!draft || view === null) return;
    const rule = { instrument: `id:${view}`, on: 'tick', left: 'ltp', op: draftOp(), value: draft.price,
                   repeat, cooldown_s: 60, name: `${TH.state.instrument.tradingsymbol || view} ${draft.price}` };
    try {
      await call('/api/alerts', { method: 'POST', body: JSON.stringify(rule) });
      dropDraft();
      await refresh();
    } catch (err) { error(String(err.message || err)); }
  }

  async function deleteRule(id) {
    try {
      await call(`/api/alerts/${id}`, { method: 'DELETE' });
      await refresh();
    } catch (err) { error(String(err.message || err)); }
  }

  async function showHistory(id, item) {
    try {
      const body = await call(`/api/alerts/${id}/history?limit=20`);
      const old = item.querySelector('ol');
      if (old) old.remove();
      const list = document.createElement('ol');
      for (const t of body.items) {
        const ok = t.attempts.filter((a) => a.ok).map((a) => a.channel);
        list.append(text('li', `${t.observed_at}: ${t.payload.left} (${t.attempts.length} attempts${ok.length ? `, delivered: ${ok.join(', ')}` : ''})`));
      }
      if (!body.items.length) list.append(text('li', 'not fired yet'));
      item.append(list);
    } catch (err) { error(String(err.message || err)); }
  }

  function dropDraft() {
    if (draft) TH.candleSeries.removePriceLine(draft.line);
    draft = null;
  }

  TH.chart.subscribeClick((param) => {
    if (!param.point || !param.sourceEvent || !param.sourceEvent.altKey) return;
    const price = TH.candleSeries.coordinateToPrice(param.point.y);
    if (price === null) return;
    dropDraft();
    const rounded = Math.round(price * 100) / 100;
    draft = { price: rounded, line: TH.candleSeries.createPriceLine({ price: rounded, color: '#29b6f6',
                                                                       lineWidth: 1, lineStyle: 1, title: 'new alert' }) };
    refresh();
  });

  TH.on('loaded', () => { dropDraft(); refresh(); });
  TH.on('alert', (data) => {
    fired += 1;
    panel.dataset.fired = String(fired);
    const note = text('p', `🔔 ${data.name || data.condition}: ${data.left} at ${data.observed_at}`, 'alerts-fired');
    panel.prepend(note);
    if (data.instrument_id === view) refresh().then(() => panel.prepend(note));
  });
  window.TH_ALERTS = Object.freeze({ refresh, summary: () => ({ rules: Number(panel.dataset.rules || 0), fired }) });
})();
