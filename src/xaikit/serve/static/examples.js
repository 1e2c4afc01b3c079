// The examples view: nearest examples with BiLRP maps, pertinent positive and negative (background jobs).
const examplesView = {
  input: null,
  async start() {
    const listing = await xk.api('/api/explain/inputs');
    const box = document.getElementById('inputs');
    box.innerHTML = listing.items.filter((i) => i.kind === 'image').map((item) =>
      `<img src="${xk.esc(item.url)}" title="${xk.esc(item.name)}" data-ref="${xk.esc(item.ref)}">`).join('');
    box.querySelectorAll('img').forEach((img) => img.onclick = () => {
      box.querySelectorAll('.selected').forEach((s) => s.classList.remove('selected'));
      img.classList.add('selected'); this.input = {input: img.dataset.ref};
    });
    const current = xk.currentInput();
    if (current && current.input.input) this.input = current.input;
    document.getElementById('neighbours').onclick = () => this.neighbours();
    document.getElementById('cem').onclick = () => this.cem();
  },
  figure(title, answer, image) {
    const fig = document.createElement('figure');
    fig.className = 'card';
    fig.innerHTML = (image ? `<img src="${image}" style="width:112px;image-rendering:pixelated">` : '') +
      `<figcaption>${title}</figcaption><div class="readout"></div>`;
    const canvas = xk.showMap(fig, answer, fig.querySelector('.readout'));
    canvas.style.width = '112px'; canvas.style.imageRendering = 'pixelated';
    return fig;
  },
  async neighbours() {
    if (!this.input) { xk.message('pick an input'); return; }
    const out = document.getElementById('neighbours-out');
    out.innerHTML = ''; out.dataset.status = 'pending';
    try {
      const k = Number(document.getElementById('k').value);
      const r = await xk.runJob('/api/examples/neighbours', {...this.input, k}, document.getElementById('progress'));
      document.getElementById('query').innerHTML =
        `<img src="data:image/png;base64,${r.preview}" style="width:112px;image-rendering:pixelated">`;
      r.neighbours.forEach((n) => {
        const fig = this.figure(`${xk.esc(n.name)} cos ${n.similarity.toFixed(3)}`, n.map, n.url);
        fig.dataset.index = n.index; fig.dataset.similarity = n.similarity; fig.classList.add('neighbour');
        out.appendChild(fig);
      });
      out.dataset.status = 'done';
    } catch (error) { xk.message(error.message); out.dataset.status = 'failed'; }
  },
  async cem() {
    if (!this.input) { xk.message('pick an input'); return; }
    const out = document.getElementById('cem-out');
    out.innerHTML = ''; out.dataset.status = 'pending';
    try {
      const r = await xk.runJob('/api/examples/cem', this.input, document.getElementById('progress'));
      for (const mode of ['pp', 'pn']) {
        const p = r[mode];
        const title = `${mode === 'pp' ? 'pertinent positive' : 'pertinent negative'}: ` +
          (p.found ? `classified ${xk.esc(p.class_name)}` : 'none found') +
          `, ${(100 * p.sparsity).toFixed(1)} % ${p.what}`;
        const fig = this.figure(title, p.map, `data:image/png;base64,${p.image}`);
        fig.dataset.mode = mode; fig.dataset.found = p.found; fig.dataset.class = p.class;
        out.appendChild(fig);
      }
      out.dataset.status = 'done';
    } catch (error) { xk.message(error.message); out.dataset.status = 'failed'; }
  },
};
examplesView.start().catch((error) => xk.message(error.message));
