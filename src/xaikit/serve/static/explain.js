// The explain view: inputs, prediction and target, methods and settings; one request per method, each card
// drawn when its answer comes. Cards carry data-status, data-sum and data-checksum (what the tests read).
const explainView = {
  options: null, input: null, prediction: null, round: 0,

  async start() {
    const options = this.options = await xk.api('/api/explain/options');
    const methods = document.getElementById('methods');
    const shown = [...new Set([...options.defaults, 'input_x_gradient', 'smooth_grad', 'grad_cam', 'occlusion'])];
    methods.innerHTML = shown.filter((m) => options.methods.includes(m)).map((m) =>
      `<label><input type="checkbox" name="method" value="${m}" ${options.defaults.includes(m) ? 'checked' : ''}>
       ${m}</label>`).join('');
    const composite = document.getElementById('composite');
    composite.innerHTML = options.composites.map((c) =>
      `<option ${c === options.composite ? 'selected' : ''}>${c}</option>`).join('');
    document.getElementById('metric-names').value = options.default_metrics.join(' ');
    const typed = document.getElementById('typed');
    if (options.kind === 'text') {
      typed.innerHTML = '<label for="text">or type a text</label><input type="text" id="text">' +
        '<button class="plain" id="use-text">Use text</button>';
      document.getElementById('use-text').onclick =
        () => this.pick({text: document.getElementById('text').value}, 'typed text');
    } else if (options.kind !== 'image' && options.kind !== 'none') {
      typed.innerHTML = '<label for="row">or type a table row (numbers, commas)</label><input type="text" id="row">' +
        '<button class="plain" id="use-row">Use row</button>';
      document.getElementById('use-row').onclick = () => this.pick(
        {row: document.getElementById('row').value.split(',').map(Number)}, 'typed row');
    }
    const listing = await xk.api('/api/explain/inputs');
    const box = document.getElementById('inputs');
    box.innerHTML = listing.items.map((item, i) => item.kind === 'image'
      ? `<img src="${xk.esc(item.url)}" title="${xk.esc(item.name)}" data-ref="${xk.esc(item.ref)}" data-index="${i}">`
      : `<button class="plain" data-ref="${xk.esc(item.ref)}" data-index="${i}">${xk.esc(item.name)}</button>`
    ).join('');
    box.querySelectorAll('[data-ref]').forEach((el) => el.onclick = () => {
      box.querySelectorAll('.selected').forEach((s) => s.classList.remove('selected'));
      el.classList.add('selected');
      this.pick({input: el.dataset.ref}, el.title || el.textContent);
    });
    document.getElementById('upload').onsubmit = (event) => { event.preventDefault(); this.upload(); };
    document.getElementById('explain').onclick = () => this.explainAll();
    document.getElementById('composite').onchange = () => { if (this.input) this.explainAll(); };
  },

  async upload() {
    const file = document.getElementById('file').files[0];
    if (!file) { xk.message('choose a file to upload'); return; }
    const form = new FormData(); form.append('file', file);
    try {
      const item = await xk.api('/api/explain/upload', {method: 'POST', body: form});
      xk.message('');
      await this.pick({input: item.ref}, item.name);
    } catch (error) { xk.message(error.message); document.body.dataset.lastError = error.status; }
  },

  async pick(input, name) {
    this.input = input;
    sessionStorage.setItem('xaikit-input', JSON.stringify({input, name}));
    document.getElementById('picked').textContent = name;
    try {
      const p = this.prediction = await xk.post('/api/explain/predict', input);
      xk.message('');
      const rows = p.top.map((t) =>
        `<div>${t.index}: ${xk.esc(t.name)} <span class="muted">${(100 * t.probability).toFixed(1)}%</span></div>`);
      const box = document.getElementById('prediction');
      const picture = p.preview ? `<img src="${xk.esc(p.preview)}" style="width:96px;image-rendering:pixelated">` : '';
      box.innerHTML = picture + rows.join('');
      box.dataset.top = p.top[0].index;
      const options = p.top.map((t) => `<option value="${t.index}">${t.index}: ${xk.esc(t.name)}</option>`).join('');
      document.getElementById('target').innerHTML = '<option value="argmax">predicted class</option>' + options;
      document.getElementById('contrast').innerHTML = '<option value="">(none)</option>' + options;
      document.getElementById('cards').innerHTML = '';
    } catch (error) { xk.message(error.message); }
  },

  target() {
    const a = document.getElementById('target').value, b = document.getElementById('contrast').value;
    return b ? `${a} vs ${b}` : a;
  },

  requests() {
    const steps = Number(document.getElementById('steps').value) || 16;
    const composite = document.getElementById('composite').value;
    const chosen = [...document.querySelectorAll('input[name=method]:checked')].map((e) => e.value);
    const list = chosen.map((m) => {
      const settings = {};
      if (m === 'lrp') settings.composite = composite;
      if (m === 'integrated_gradients') settings.steps = steps;
      if (['smooth_grad', 'smooth_grad_squared', 'var_grad'].includes(m)) settings.samples = steps;
      return {method: m, settings};
    });
    const more = document.getElementById('more').value.trim();
    if (more) list.push({method: more, settings: {}});
    return list;
  },

  async explainAll() {
    if (!this.input) { xk.message('pick an input first'); return; }
    const round = ++this.round, target = this.target();
    const cards = document.getElementById('cards');
    cards.innerHTML = '';
    await Promise.all(this.requests().map(async (request, i) => {
      const card = document.createElement('div');
      card.className = 'card pending'; card.dataset.method = request.method; card.dataset.status = 'pending';
      const settings = Object.entries(request.settings).map(([k, v]) => `${k}=${v}`).join(' ');
      card.innerHTML = `<h4>${xk.esc(request.method)} ${xk.esc(settings)}</h4>
        <div class="body">computing…</div><div class="readout"></div><div class="stats"></div>`;
      cards.appendChild(card);
      try {
        const answer = await xk.post('/api/explain/heatmap', {...this.input, ...request, target});
        if (round !== this.round) return;
        this.draw(card, answer, request, target);
      } catch (error) {
        card.className = 'card failed'; card.dataset.status = 'failed';
        card.querySelector('.body').textContent = error.message;
      }
    }));
  },

  draw(card, answer, request, target) {
    card.className = 'card'; card.dataset.status = 'done';
    card.dataset.sum = answer.sum; card.dataset.checksum = answer.checksum;
    card.dataset.composite = answer.settings.composite || '';
    const body = card.querySelector('.body'), readout = card.querySelector('.readout');
    if (answer.kind === 'image' && answer.map) {
      const bytes = Uint8Array.from(atob(answer.map), (c) => c.charCodeAt(0));
      const values = Array.from(new Float32Array(bytes.buffer));
      body.innerHTML = '<canvas></canvas>';
      const canvas = body.querySelector('canvas');
      xk.drawMap(canvas, values, answer.h, answer.w, answer.scale);
      xk.hover(canvas, values, answer.h, answer.w, readout);
    } else if (answer.kind === 'text') {
      body.innerHTML = answer.html;
    } else if (answer.kind === 'table') {
      body.innerHTML = `<img class="bars" src="data:image/png;base64,${answer.png}" style="width:224px">`;
    } else {
      body.textContent = answer.values.map((v) => v.toPrecision(3)).join(' ');
    }
    card.querySelector('.stats').innerHTML =
      `sum ${answer.sum.toPrecision(5)}` + (answer.score !== null ? ` · score ${answer.score.toPrecision(5)}` : '') +
      ` · ${answer.seconds.toFixed(2)} s <button class="plain metrics">metrics</button><div class="scores"></div>`;
    card.querySelector('button.metrics').onclick = () => this.metrics(card, request, target);
    const notes = answer.warnings || [];  // the library's warnings: never only in the server's log
    card.dataset.warnings = notes.length;
    if (notes.length) {
      const box = document.createElement('div');
      box.className = 'warning';
      box.textContent = '⚠ ' + notes.join(' ⚠ ');
      card.querySelector('.stats').prepend(box);
    }
  },

  async metrics(card, request, target) {
    const names = document.getElementById('metric-names').value.split(/\s+/).filter(Boolean);
    const box = card.querySelector('.scores');
    box.textContent = 'computing…';
    try {
      const answer = await xk.post('/api/explain/metrics', {...this.input, ...request, target, metrics: names});
      box.innerHTML = '<table class="metrics">' + Object.entries(answer.scores).map(([name, s]) =>
        `<tr data-metric="${xk.esc(name)}" data-value="${s.value}">` +
        `<th>${xk.esc(name)}</th><td>${s.value.toPrecision(4)}</td>` +
        `<td class="muted">${s.higher_is_better ? '↑' : '↓'}</td></tr>`).join('') + '</table>';
      card.dataset.metrics = 'done';
    } catch (error) { box.textContent = error.message; card.dataset.metrics = 'failed'; }
  },
};
explainView.start().catch((error) => xk.message(error.message));
