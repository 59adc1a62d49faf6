"""The yardstick for benchmarks/train_step.py: the UmURL pretraining step written the straightforward way.

This follows the structure of the released code: four separate encoder passes (joint of v1, bone of
v2, motion of v3, fused v4), sequence-first Transformers (`batch_first=False`) fed through permutes,
bones built joint by joint in a Python loop, and the loss's covariance term from the full (D, D)
covariance matrix; benchmarks/train_step.py pairs it with torch's default Adam. It has umurl.UmURL's
parameter names, so both load the same state_dict, and it computes the same projections, loss and
gradients (tests/test_fast_paths.py checks this on the golden fixture). It exists only to be measured
against; train with umurl.py.

Shape legend: N batch, C coordinates, T frames, V joints, M persons, H hidden size, D projector width.
"""
import sys
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from umurl import PositionalEncoding, UmURLEncoder, off_diagonal, projector, variance_hinge  # noqa: E402


def bones_by_loop(x, parents):
    """bone[v] = x[v] - x[parents[v]], one joint at a time: (N, C, T, V, M) -> same shape."""
    bone = torch.zeros_like(x)
    for v, parent in enumerate(parents):
        bone[:, :, :, v] = x[:, :, :, v] - x[:, :, :, parent]
    return bone


def motion_by_difference(x):
    """motion[t] = x[t+1] - x[t], last frame zero: (N, C, T, V, M) -> same shape."""
    motion = torch.zeros_like(x)
    motion[:, :, :-1] = x[:, :, 1:] - x[:, :, :-1]
    return motion


def sequence_first_transformer(hidden_size, num_head, num_layer):
    """The released encoder: post-norm, feed-forward width H, ReLU, no dropout, (L, N, H) inputs."""
    layer = nn.TransformerEncoderLayer(hidden_size, num_head, dim_feedforward=hidden_size, dropout=0.0,
                                       activation="relu", batch_first=False)
    return nn.TransformerEncoder(layer, num_layer, enable_nested_tensor=False)


class NaiveAgnosticEncoder(nn.Module):
    """Temporal and spatial streams; tokens are permuted to sequence-first and back around each one."""

    def __init__(self, hidden_size, num_head, num_layer, max_frames=200):
        super().__init__()
        self.pe = PositionalEncoding(hidden_size, max_frames)
        self.t_tr = sequence_first_transformer(hidden_size, num_head, num_layer)
        self.s_tr = sequence_first_transformer(hidden_size, num_head, num_layer)

    def forward(self, t_tokens, s_tokens):
        t = self.t_tr(self.pe(t_tokens).permute(1, 0, 2))  # (T, N, H)
        s = self.s_tr(s_tokens.permute(1, 0, 2))  # (M*V, N, H)
        t = t.permute(1, 0, 2).max(dim=1)[0]  # (N, H)
        s = s.permute(1, 0, 2).max(dim=1)[0]  # (N, H)
        return torch.cat([t, s], dim=1)  # (N, 2H)


class NaiveBackbone(UmURLEncoder):
    """UmURL's embeddings and early fusion with the sequence-first encoder, one modality input at a time."""

    def __init__(self, config):
        super().__init__(config)
        # Replaces the batch-first encoder in place: same position among the modules, same parameter names.
        self.ma_encoder = NaiveAgnosticEncoder(config.hidden_size, config.num_head, config.num_layer)

    def joint_only(self, x):
        return self.ma_encoder(*self.j_emb(x))

    def bone_only(self, x):
        return self.ma_encoder(*self.b_emb(bones_by_loop(x, self.parents)))

    def motion_only(self, x):
        return self.ma_encoder(*self.m_emb(motion_by_difference(x)))

    def fused(self, x):
        (t_j, s_j), (t_b, s_b) = self.j_emb(x), self.b_emb(bones_by_loop(x, self.parents))
        t_m, s_m = self.m_emb(motion_by_difference(x))
        return self.ma_encoder(*self.mm_fusion([t_j, t_b, t_m], [s_j, s_b, s_m]))


class NaiveUmURL(nn.Module):
    """Same parameters as umurl.UmURL; the forward makes the four encoder passes one after another."""

    def __init__(self, config):
        super().__init__()
        self.backbone = NaiveBackbone(config)
        self.j_projector = projector(2 * config.hidden_size, config.projector_dim)
        self.b_projector = projector(2 * config.hidden_size, config.projector_dim)
        self.m_projector = projector(2 * config.hidden_size, config.projector_dim)

    def forward(self, v1, v2, v3, v4):
        y_j = self.backbone.joint_only(v1)
        y_b = self.backbone.bone_only(v2)
        y_m = self.backbone.motion_only(v3)
        y_u = self.backbone.fused(v4)
        # As released: each projector sees y_u first, then its uni-modal feature (BatchNorm order).
        z_uj, z_ub, z_um = self.j_projector(y_u), self.b_projector(y_u), self.m_projector(y_u)
        z_j, z_b, z_m = self.j_projector(y_j), self.b_projector(y_b), self.m_projector(y_m)
        return {"z_j": z_j, "z_b": z_b, "z_m": z_m, "z_uj": z_uj, "z_ub": z_ub, "z_um": z_um}


def naive_variance_covariance(z, variance_weight=5.0):
    """5 * variance hinge + squared off-diagonal entries of the full (D, D) covariance, over D."""
    b, d = z.shape
    centred = z - z.mean(dim=0)
    cov = (centred.T @ centred) / (b - 1)  # (D, D)
    return variance_weight * variance_hinge(z) + off_diagonal(cov).pow(2).sum() / d


def naive_loss(z, consistency_weight=5.0, variance_weight=5.0):
    """The loss of SPEC.md term by term, in float32, as released; returns the total."""
    with torch.autocast(z["z_j"].device.type, enabled=False):
        z = {name: value.float() for name, value in z.items()}
        c = (z["z_j"] + z["z_b"] + z["z_m"]) / 3
        intra = sum(F.mse_loss(z[f"z_{m}"], z[f"z_u{m}"]) for m in "jbm")
        inter = sum(F.mse_loss(z[f"z_{m}"], c) for m in "jbm")
        reg = sum(naive_variance_covariance(value, variance_weight) for value in z.values())
        return consistency_weight * (intra + inter) + reg
