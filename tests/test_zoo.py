"""The offline zoo: the ground-truth CNN's weights are the same on every machine (issue 18.3)."""
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


def test_shipped_weights_are_what_the_trainer_gives_and_classify_held_out_data():
    shipped = load_shapes_model()
    assert not shipped.training
    assert accuracy(shipped, make_shapes(256, seed=1)) >= 0.98
    trained = train_shapes_model(seed=0).state_dict()
    for key, value in shipped.state_dict().items():
        torch.testing.assert_close(value, trained[key], rtol=0, atol=1e-5, msg=key)


def test_all_imagenet_class_names_ship_with_the_package():
    from xaikit.zoo import imagenet_label

    assert imagenet_label(285) == "Egyptian cat" and imagenet_label(967) == "espresso"
    assert imagenet_label(0) == "tench" and imagenet_label(999) == "toilet tissue"
    assert imagenet_label(872) != "class 872" and imagenet_label(1000) == "class 1000"
