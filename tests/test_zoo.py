"""The offline zoo: the ground-truth CNN the trainer gives classifies like the shipped one on any machine, and
its training does not depend on the thread count."""
import torch

from xaikit.zoo import accuracy, load_shapes_model, make_shapes, train_shapes_model


def _train_small(threads: int) -> dict:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model = train_shapes_model(make_shapes(96, seed=5), epochs=1, seed=3)
    finally:
        torch.set_num_threads(before)
    assert torch.get_num_threads() == before  # training restored what it found
    return model.state_dict()


def test_training_does_not_depend_on_the_thread_count():
    one, two = _train_small(1), _train_small(2)
    for key in one:
        assert torch.equal(one[key], two[key]), key


def test_shipped_weights_classify_held_out_data_as_a_retraining_does():
    """What holds on any CPU: the shipped model and a retraining by the trainer both classify held-out data and
    agree on it. Their weights agree bit for bit only on the same vector ISA: training amplifies the last-bit
    differences of another CPU's kernels (under ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41 the
    retrained weights differ by up to 0.5, with accuracy 1.0 and full agreement)."""
    shipped = load_shapes_model()
    assert not shipped.training
    held_out = make_shapes(256, seed=1)
    assert accuracy(shipped, held_out) >= 0.98
    trained = train_shapes_model(seed=0).eval()
    assert accuracy(trained, held_out) >= 0.98
    with torch.no_grad():
        agree = (shipped(held_out.x).argmax(1) == trained(held_out.x).argmax(1)).float().mean().item()
    assert agree >= 0.97


def test_all_imagenet_class_names_ship_with_the_package():
    from xaikit.zoo import imagenet_label

    assert imagenet_label(285) == "Egyptian cat" and imagenet_label(967) == "espresso"
    assert imagenet_label(0) == "tench" and imagenet_label(999) == "toilet tissue"
    assert imagenet_label(872) != "class 872" and imagenet_label(1000) == "class 1000"
