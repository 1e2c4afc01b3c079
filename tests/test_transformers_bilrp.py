"""BiLRP: pairwise relevance of the similarity of two sequences (Eberle et al. 2022)."""
import pytest
import torch

import xaikit as xk
from models import assert_unchanged, snapshot
from text_models import VOCAB, bert_encoder, bias_free
from xaikit.zoo.text import SentenceEncoder

torch.manual_seed(0)
A = torch.randint(1, VOCAB, (2, 6))
B = torch.randint(1, VOCAB, (2, 5))
MASK_B = torch.ones_like(B)
MASK_B[1, 3:] = 0


@pytest.fixture(scope="module")
def encoder():
    return SentenceEncoder(bias_free(bert_encoder())).eval()


def test_pairwise_relevance_sums_to_the_similarity(encoder):
    """Σ_m LRP(φ_m)(a)_i LRP(φ_m)(b)_j sums to Σ_m φ_m(a) φ_m(b) when every first-order map conserves
    (bias-free model, CP-LRP, ε → 0); cosine divides by the two norms."""
    before = snapshot(encoder)
    kwargs_b = {"attention_mask": MASK_B}
    dot = xk.BiLRP(encoder, method="lrp:composite=cp_lrp", method_settings={"epsilon": 1e-9},
                   similarity="dot")(A, B, kwargs_b=kwargs_b)
    with torch.no_grad():
        phi_a, phi_b = encoder(A), encoder(B, attention_mask=MASK_B)
    assert dot.attribution.shape == (2, 6, 5)
    torch.testing.assert_close(dot.output, (phi_a * phi_b).sum(1))
    torch.testing.assert_close(dot.attribution.sum((1, 2)), dot.output, rtol=1e-3, atol=0)
    cosine = xk.BiLRP(encoder, method="lrp:composite=cp_lrp", method_settings={"epsilon": 1e-9})(
        A, B, kwargs_b=kwargs_b)
    norms = (phi_a.norm(dim=1) * phi_b.norm(dim=1))[:, None, None]
    torch.testing.assert_close(cosine.attribution, dot.attribution / norms)
    assert (dot.attribution[1, :, 3:] == 0).all()  # padding of b
    assert_unchanged(encoder, before)


def test_a_sequence_against_itself_gives_a_symmetric_matrix(encoder):
    expl = xk.BiLRP(encoder)(A, A)
    torch.testing.assert_close(expl.attribution, expl.attribution.transpose(1, 2))


def test_pairs_are_independent_of_their_batch_mates(encoder):
    both = xk.BiLRP(encoder, batch_size=4)(A, B)
    first = xk.BiLRP(encoder, batch_size="auto")(A[:1], B[:1])
    torch.testing.assert_close(both.attribution[:1], first.attribution, rtol=1e-5, atol=1e-8)


def test_first_order_maps_are_those_of_lrp(encoder):
    """The first-order map of dimension m is LRP of φ_m (batched over all dimensions at once)."""
    bilrp = xk.BiLRP(encoder, method="lrp:composite=attnlrp")
    _, maps = bilrp.first_order(A, {})
    for m in (0, 7):
        single = xk.LRP(encoder, composite="attnlrp")(A, target=m).attribution
        torch.testing.assert_close(maps[:, m], single, rtol=1e-5, atol=1e-8)


def test_bad_input(encoder):
    with pytest.raises(ValueError, match="unknown similarity 'euclid'"):
        xk.BiLRP(encoder, similarity="euclid")
    with pytest.raises(ValueError, match="same number of samples"):
        xk.BiLRP(encoder)(A, B[:1])
    with pytest.raises(ValueError, match="token ids \\(N, L\\) or embedding vectors"):
        xk.BiLRP(encoder)(A[0], B[0])
    with pytest.raises(ValueError, match="embeddings of shape \\(batch, dims\\)"):
        xk.BiLRP(encoder.encoder)(A, B)
