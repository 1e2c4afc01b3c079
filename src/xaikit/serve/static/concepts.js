// The concepts view: top concepts of the picked input, a concept's conditional heatmap and reference samples.
const conceptsView = {
  input: null,
  async start() {
    const options = await xk.api('/api/concepts/options');
    document.getElementById('layer').innerHTML = options.layers.map((l) =>
      `<option ${l === options.layer ? 'selected' : ''}>${xk.esc(l)}</option>`).join('');
    const listing = await xk.api('/api/explain/inputs');
    const box = document.getElementById('inputs');
    box.innerHTML = listing.items.filter((i) => i.kind === 'image').map((item) =>
      `<img src="${xk.esc(item.url)}" title="${xk.esc(item.name)}" data-ref="${xk.esc(item.ref)}">`).join('');
    box.querySelectorAll('img').forEach((img) => img.onclick = () => {
      box.querySelectorAll('.selected').forEach((s) => s.classList.remove('selected'));
      img.classList.add('selected'); this.input = {input: img.dataset.ref}; this.find();
    });
    const current = xk.currentInput();
    if (current && current.input.input) {
      const img = box.querySelector(`img[data-ref="${CSS.escape(current.input.input)}"]`);
      if (img) img.classList.add('selected');
      this.input = current.input;
    }
    document.getElementById('find').onclick = () => this.find();
  },
  body(extra) {
    return {...this.input, layer: document.getElementById('layer').value, ...extra};
  },
  async find() {
    if (!this.input) { xk.message('pick an input'); return; }
    const box = document.getElementById('concepts');
    box.textContent = 'computing…';
    try {
      const answer = await xk.post('/api/concepts/top', this.body({top: Number(document.getElementById('top').value)}));
      xk.message('');
      box.innerHTML = answer.concepts.map((c) =>
        `<div class="concept" data-channel="${c.channel}" data-share="${c.share}">
         <button class="plain">channel ${c.channel}</button>
         ${c.share.toFixed(1)} %</div>`).join('');
      box.dataset.layer = answer.layer; box.dataset.status = 'done';
      box.querySelectorAll('.concept').forEach((row) => row.querySelector('button').onclick =
        () => this.open(Number(row.dataset.channel)));
    } catch (error) { box.textContent = ''; xk.message(error.message); }
  },
  async open(channel) {
    const box = document.getElementById('conditional'), refs = document.getElementById('references');
    box.textContent = 'computing…'; refs.innerHTML = ''; refs.dataset.status = 'pending';
    try {
      const answer = await xk.post('/api/concepts/heatmap', this.body({channel}));
      box.innerHTML = `<div class="muted">channel ${channel}: ${answer.share.toFixed(1)} %</div>`;
      const canvas = xk.showMap(box, answer, document.getElementById('conditional-readout'));
      canvas.style.width = '224px'; canvas.style.imageRendering = 'pixelated';
      box.dataset.channel = channel; box.dataset.share = answer.share; box.dataset.status = 'done';
      const result = await xk.runJob('/api/concepts/references', this.body({channel}),
                                     document.getElementById('references-progress'));
      refs.innerHTML = result.samples.map((s) =>
        `<figure class="card reference" data-index="${s.index}" data-name="${xk.esc(s.name)}" data-value="${s.value}">
         <img src="data:image/png;base64,${s.crop}" style="width:96px;image-rendering:pixelated">
         <img src="${xk.esc(s.url)}" style="width:96px;image-rendering:pixelated">
         <figcaption class="muted">${xk.esc(s.name)}: ${s.value.toPrecision(3)}</figcaption></figure>`).join('');
      refs.dataset.channel = channel; refs.dataset.status = 'done';
    } catch (error) { xk.message(error.message); refs.dataset.status = 'failed'; }
  },
};
conceptsView.start().catch((error) => xk.message(error.message));
