"""Model structure: token layouts, modalities, subsets of modalities, other topologies, sizes."""
import itertools
import json
from dataclasses import replace

import pytest
import torch

import skeleton
from umurl import (MODALITIES, DownstreamModel, UmURL, UmURLConfig, UmURLEncoder, count_parameters, spatial_tokens,
                   temporal_tokens)

TINY = UmURLConfig(hidden_size=16, num_head=2, num_layer=1, projector_dim=64)


def numbered_batch(n=2, c=3, t=64, v=25, m=2):
    """x[n, c, t, v, m] holds a number that spells out its own index, so layouts can be read back."""
    index = torch.arange(n * c * t * v * m, dtype=torch.float32)
    return index.reshape(n, c, t, v, m)


def random_batch(n=4, t=64, v=25, m=2, seed=0):
    return torch.randn(n, 3, t, v, m, generator=torch.Generator().manual_seed(seed))


def test_temporal_token_orders_person_joint_xyz():
    x = numbered_batch()
    tokens = temporal_tokens(x)
    assert tokens.shape == (2, 64, 150)
    n, t, v, m, c = 1, 10, 7, 1, 2
    assert tokens[n, t, (m * 25 + v) * 3 + c] == x[n, c, t, v, m]


def test_spatial_token_orders_frame_xyz_per_person_joint():
    x = numbered_batch()
    tokens = spatial_tokens(x)
    assert tokens.shape == (2, 50, 192)
    n, t, v, m, c = 1, 10, 7, 1, 2
    assert tokens[n, m * 25 + v, t * 3 + c] == x[n, c, t, v, m]


def test_ntu_bones_follow_the_published_pairs():
    # The SPEC's 1-based (joint, parent) pairs, written out independently of skeleton.py.
    pairs = [(1, 2), (2, 21), (3, 21), (4, 3), (5, 21), (6, 5), (7, 6), (8, 7), (9, 21), (10, 9), (11, 10),
             (12, 11), (13, 1), (14, 13), (15, 14), (16, 15), (17, 1), (18, 17), (19, 18), (20, 19), (21, 21),
             (22, 23), (23, 8), (24, 25), (25, 12)]
    x = random_batch()
    bone = skeleton.joint_to_bone(x, skeleton.NTU_25.parents)
    for joint, parent in pairs:
        assert torch.equal(bone[:, :, :, joint - 1], x[:, :, :, joint - 1] - x[:, :, :, parent - 1])
    assert not bone[:, :, :, 20].any(), "joint 21 is the root: its bone is zero"


def test_motion_is_the_next_frame_minus_this_one_and_zero_at_the_end():
    x = random_batch()
    motion = skeleton.joint_to_motion(x)
    assert torch.equal(motion[:, :, :-1], x[:, :, 1:] - x[:, :, :-1])
    assert not motion[:, :, -1].any()


def test_msr_topology_is_a_tree_rooted_at_the_neck():
    parents = skeleton.MSR_20.parents
    assert skeleton.MSR_20.num_joints == 20
    assert [v for v in range(20) if parents[v] == v] == [2]
    for joint in range(20):  # every joint reaches the root without a cycle
        seen = set()
        while parents[joint] != joint:
            assert joint not in seen
            seen.add(joint)
            joint = parents[joint]


@pytest.mark.parametrize("subset", [s for r in (1, 2, 3) for s in itertools.combinations(MODALITIES, r)])
def test_encoder_accepts_every_non_empty_subset(subset):
    torch.manual_seed(0)
    encoder = UmURLEncoder(TINY).eval()
    x = random_batch()
    y = encoder(x, subset)
    assert y.shape == (4, 32) and torch.isfinite(y).all()
    # Order of the names does not matter; the feature depends on which modalities are present.
    assert torch.equal(encoder(x, tuple(reversed(subset))), y)


def test_single_modality_skips_fusion_and_several_are_fused():
    torch.manual_seed(0)
    encoder = UmURLEncoder(TINY).eval()
    x = random_batch()
    bone = skeleton.joint_to_bone(x, encoder.parents)
    assert torch.equal(encoder(x, ("bone",)), encoder.ma_encoder(*encoder.b_emb(bone)))
    t_j, s_j = encoder.j_emb(x)
    t_b, s_b = encoder.b_emb(bone)
    fused = encoder.ma_encoder(encoder.mm_fusion.t_fusion((t_j + t_b) / 2), encoder.mm_fusion.s_fusion((s_j + s_b) / 2))
    assert torch.allclose(encoder(x, ("joint", "bone")), fused, atol=1e-6)


@pytest.mark.parametrize("bad", [(), ("rgb",), ("joint", "depth")])
def test_encoder_rejects_unknown_or_empty_modalities(bad):
    with pytest.raises(ValueError, match="non-empty subset"):
        UmURLEncoder(TINY)(random_batch(), bad)


def test_pretraining_gradients_reach_every_parameter():
    torch.manual_seed(0)
    model = UmURL(TINY)
    views = [random_batch(seed=s) for s in range(4)]
    from umurl import umurl_loss

    total, _ = umurl_loss(model(*views))
    total.backward()
    silent = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not silent


def test_downstream_model_uses_the_fused_feature_and_a_small_linear_head():
    torch.manual_seed(0)
    model = DownstreamModel(replace(TINY, hidden_size=256), num_classes=60).eval()
    x = random_batch()
    assert model(x).shape == (4, 60)
    assert torch.equal(model.features(x), model.backbone(x))
    assert model.fc.weight.std().item() == pytest.approx(0.01, rel=0.1)
    assert not model.fc.bias.any()
    assert DownstreamModel(TINY, 5, modalities=("motion",)).modalities == ("motion",)


def test_other_topologies_need_only_their_table_and_sizes():
    msr = skeleton.MSR_20
    config = replace(TINY, layout=msr.name, parents=msr.parents, num_joints=msr.num_joints, num_persons=1,
                     projector_dim=32)
    assert (config.t_input_size, config.s_input_size) == (1 * 20 * 3, 64 * 3)
    model = UmURL(config)
    z = model(*[random_batch(n=4, v=20, m=1, seed=s) for s in range(4)])
    assert all(value.shape == (4, 32) for value in z.values())


def test_parameter_counts_at_default_sizes():
    model = UmURL(UmURLConfig())
    assert round(count_parameters(model) / 1e6, 2) == 72.45
    assert round(count_parameters(model.backbone) / 1e6, 2) == 22.07


# ---------------------------------------------------------------------------------------------
# The configuration as data


def test_the_default_configuration_is_the_released_model():
    config = UmURLConfig()
    assert (config.layout, config.num_joints, config.num_persons, config.num_coords, config.num_frames) == \
        ("ntu25", 25, 2, 3, 64)
    assert (config.t_input_size, config.s_input_size) == (150, 192)  # M*V*C and T*C
    assert (config.hidden_size, config.num_head, config.num_layer, config.projector_dim) == (1024, 1, 1, 4096)
    assert config.parents == skeleton.NTU_25.parents


def test_input_widths_follow_the_coordinates():
    planar = replace(UmURLConfig(), num_coords=2)  # 2D keypoints
    assert (planar.t_input_size, planar.s_input_size) == (100, 128)
    model = UmURLEncoder(replace(planar, hidden_size=16)).eval()
    assert model(torch.randn(2, 2, 64, 25, 2)).shape == (2, 32)


def test_the_configuration_round_trips_through_json():
    config = replace(TINY, layout="msr20", parents=skeleton.MSR_20.parents, num_joints=20, num_persons=1)
    record = json.loads(json.dumps(config.to_dict()))
    assert isinstance(record["parents"], list)
    assert UmURLConfig.from_dict(record) == config


@pytest.mark.parametrize("change, message", [
    (lambda r: r.update(colour="red"), r"unknown keys \['colour'\] \(expected exactly layout, parents, "),
    (lambda r: r.pop("num_layer"), r"model config: missing keys \['num_layer'\] \(expected"),
    (lambda r: r.update(hidden_size=15), "hidden_size must be even and a multiple of num_head"),
    (lambda r: r.update(num_head="1"), "num_head must be a positive integer, got '1'"),
    (lambda r: r.update(num_coords=4), "num_coords must be 2 or 3, got 4"),
    (lambda r: r.update(num_frames=500), "num_frames must be at most 200"),
    (lambda r: r.update(num_joints=24), "parents must name one joint in 0..23 for each of the 24 joints"),
    (lambda r: r.update(parents="abc"), "parents must be a list of joint indices"),
])
def test_a_bad_configuration_is_one_line_naming_the_key(change, message):
    record = UmURLConfig().to_dict()
    change(record)
    with pytest.raises(ValueError, match=message) as error:
        UmURLConfig.from_dict(record)
    assert "\n" not in str(error.value) and str(error.value).startswith("model config: ")
