"""Token heatmaps for long texts: top spans (against a search written here), a scrolling box with anchors the
spans link to, the segment view's sums, generation pages whose per-token lines show spans only."""
import re

import pytest
import torch

from xaikit.viz.text import LONG, generation_html, token_html, top_spans


def test_top_spans_hold_the_top_tokens_and_do_not_overlap():
    values = torch.randn(300, generator=torch.Generator().manual_seed(0)).tolist()
    spans = top_spans(values, k=8, context=3)
    best = sorted(range(300), key=lambda i: -values[i])[:8]
    assert all(any(a <= i < b for a, b, _ in spans) for i in best)  # every top token is shown
    ordered = sorted(spans)
    assert all(b1 <= a2 for (_, b1, _), (a2, _, _) in zip(ordered, ordered[1:]))  # merged, no overlap
    assert spans[0][2] == best[0] and all(a <= p < b for a, b, p in spans)
    assert top_spans([1.0, 5.0, 2.0], k=1, context=0) == [(1, 2, 1)]


def test_long_sequences_scroll_under_their_top_spans_and_short_ones_do_not():
    tokens = [f"t{i}" for i in range(LONG + 100)]
    relevance = torch.zeros(len(tokens))
    relevance[[10, 90, 150]] = torch.tensor([3.0, 2.0, 1.0])
    page = token_html(tokens, relevance, top_k=3, context=1)
    assert page.count('class="scroll"') == 1 and page.count('class="span"') == 3
    links = re.findall(r'href="#(x\d+-\d+)"', page)
    assert len(links) == 3 and all(f'id="{link}"' in page for link in links)  # each link has its target
    assert [int(link.split("-")[1]) for link in links] == [9, 89, 149]  # peak first, context 1 before it
    short = token_html(tokens[:5], relevance[:5])
    assert 'class="scroll"' not in short and 'class="span"' not in short


def test_segment_view_sums_each_segment():
    tokens = [f"t{i}" for i in range(12)]
    relevance = torch.arange(12.0) - 4
    owner = [0] * 4 + [-1] * 2 + [1] * 6
    page = token_html(tokens, relevance, segments=(["intro", "body"], owner))
    chips = re.findall(r'class="seg" style="[^"]*" title="([^"]+)">([^:]+):', page)
    assert chips == [(f"{float(relevance[:4].sum()):+.4g}", "intro"), (f"{float(relevance[6:].sum()):+.4g}", "body")]
    assert page.count(' segstart"') == 2
    with pytest.raises(ValueError, match="owner has 3 entries for 12 tokens"):
        token_html(tokens, relevance, segments=(["a"], [0, 0, 0]))
    with pytest.raises(ValueError, match="give merge=False with segments"):
        token_html(tokens, relevance, merge=True, segments=(["a"], owner))


def test_generation_page_of_a_long_prompt_shows_spans_per_generated_token():
    prompt, steps = LONG + 40, 3
    tokens = [f"p{i}" for i in range(prompt)] + [f"g{j}" for j in range(steps)]
    matrix = torch.randn(prompt + steps, steps, generator=torch.Generator().manual_seed(1))
    page = generation_html(tokens, matrix, prompt, top_k=2, context=2)
    lines = page.split('<div class="seq">')[1:]
    assert len(lines) == 1 + steps and page.count('class="scroll"') == 1
    for j, line in enumerate(lines[1:]):
        shown = line.count('class="tok')
        assert 0 < shown <= 2 * 5 and f"→ g{j}: " in line  # two spans of at most 5 tokens, not the prompt
