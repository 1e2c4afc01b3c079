// The examples view: nearest examples with BiLRP maps, pertinent positive and negative, the top proponents and
// opponents among the training data (background jobs).
const examplesView = {
  input: null,
  async start() {
    const listing = await xk.api('/api/explain/inputs');
    const box = document.getElementById('inputs');
    // images for every panel; table rows and texts for the training data panel (the others search images)
    box.innerHTML = listing.items.map((item) => item.kind === 'image'
      ? `<img src="${xk.esc(item.url)}" title="${xk.esc(item.name)}" data-ref="${xk.esc(item.ref)}">`
      : `<button class="plain" data-ref="${xk.esc(item.ref)}">${xk.esc(item.name)}</button>`).join('');
    box.querySelectorAll('[data-ref]').forEach((el) => el.onclick = () => {
      box.querySelectorAll('.selected').forEach((s) => s.classList.remove('selected'));
      el.classList.add('selected'); this.input = {input: el.dataset.ref};
    });
    const current = xk.currentInput();  // the input picked in the explain view (a file, an upload, a typed row)
    if (current && current.input) this.input = current.input;
    document.getElementById('neighbours').onclick = () => this.neighbours();
    document.getElementById('cem').onclick = () => this.cem();
    document.getElementById('training-start').onclick = () => this.training();
    const info = await xk.api('/api/examples/training');
    const about = document.getElementById('training-about');
    if (info.available) {
      about.textContent = `(${info.method}; ${info.samples} training samples` +
        (info.ready ? ')' : '; featurised once per session, on the first request)');
    } else {
      about.textContent = `(no training data: start xaikit serve with ${info.option} DATA)`;
      document.getElementById('training-start').disabled = true;
    }
    document.getElementById('training').dataset.available = info.available;
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
  async training() {
    if (!this.input) { xk.message('pick an input'); return; }
    const panel = document.getElementById('training');
    const pro = document.getElementById('proponents'), con = document.getElementById('opponents');
    pro.innerHTML = ''; con.innerHTML = ''; panel.dataset.status = 'pending';
    try {
      const k = Number(document.getElementById('training-k').value);
      const target = document.getElementById('training-target').value.trim();
      const r = await xk.runJob('/api/examples/training', {...this.input, k, target: target || null},
        document.getElementById('training-progress'));
      document.getElementById('training-about').textContent = `(${r.method}; target ${r.target_name})`;
      for (const [box, kind] of [[pro, 'proponent'], [con, 'opponent']]) {
        r[`${kind}s`].forEach((t) => {
          const fig = document.createElement('figure');
          fig.className = `card training ${kind}`;
          fig.style.width = 'auto'; fig.style.margin = '0';
          const caption = `#${t.index} ${xk.esc(t.label_name)} τ=${t.score.toPrecision(3)}`;
          fig.innerHTML = (t.kind === 'image'
            ? `<img src="data:image/png;base64,${t.image}" style="width:80px;image-rendering:pixelated">`
            : `<code>${xk.esc(t.text)}</code>`) + `<figcaption>${caption}</figcaption>`;
          Object.assign(fig.dataset, {index: t.index, score: t.score, label: t.label, kind});
          box.appendChild(fig);
        });
      }
      panel.dataset.target = r.target; panel.dataset.status = 'done';
    } catch (error) { xk.message(error.message); panel.dataset.status = 'failed'; }
  },
};
examplesView.start().catch((error) => xk.message(error.message));
