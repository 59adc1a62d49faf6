"""UmURL: Unified Multi-modal Unsupervised Representation Learning for skeleton sequences.

Paper: "Unified Multi-modal Unsupervised Representation Learning for Skeleton-based Action
Understanding", ACM MM 2023, https://arxiv.org/abs/2311.03106. The docstrings below state every fact
of the method this file implements; parameter and buffer names follow the released checkpoints so
that they load as they are.

Shape legend: N batch, C coordinates (xyz), T frames, V joints, M persons, H hidden size,
D projector output width. A batch of skeletons is (N, C, T, V, M).

Reading order: the model's sizes as data (UmURLConfig) -> tokens and modalities -> embeddings and
fusion -> shared encoder -> the pretraining model and its loss -> the downstream model -> parameter
counts (`python umurl.py`).
"""
import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

from skeleton import NTU_25, joint_to_bone, joint_to_motion

MODALITIES = ("joint", "bone", "motion")
MAX_FRAMES = 200  # rows of the sinusoidal position table (a buffer of the released checkpoints)


# ---------------------------------------------------------------------------------------------
# Sizes: one frozen record, stored in every checkpoint the project writes
# ---------------------------------------------------------------------------------------------

def hidden_size_problem(hidden_size, num_head, names=("hidden_size", "num_head")):
    """What is wrong with hidden_size for num_head, or None: attention splits H over the heads, and the
    sinusoidal position encoding pairs H's channels (sin, cos). `names` spell the two in the message."""
    if hidden_size % num_head or hidden_size % 2:
        return f"{names[0]} must be even and a multiple of {names[1]} ({num_head}), got {hidden_size}"
    return None


@dataclass(frozen=True)
class UmURLConfig:
    """Every size of the model. The defaults are the released model: NTU-25 skeletons of two persons,
    xyz coordinates, 64-frame views, hidden size 1024, one head, one layer, projectors 4096 wide.

    The skeleton half (layout .. num_frames) follows from the dataset (options/common.py builds it
    from a protocol); the other half from the size flags. Input widths are derived, never stored.
    """

    layout: str = NTU_25.name  # the skeleton layout's name (skeleton.py)
    parents: tuple = NTU_25.parents  # 0-based parent of each joint (bones); a root is its own parent
    num_joints: int = NTU_25.num_joints  # V
    num_persons: int = 2  # M
    num_coords: int = 3  # C: 3 for xyz
    num_frames: int = 64  # T of a view
    hidden_size: int = 1024  # H
    num_head: int = 1
    num_layer: int = 1
    projector_dim: int = 4096  # D

    def __post_init__(self):
        object.__setattr__(self, "parents", tuple(self.parents))  # a JSON list reads back as a tuple
        problem = self.problem()
        if problem is not None:
            raise ValueError(f"model config: {problem}")

    def problem(self):
        """What makes this configuration unbuildable, or None."""
        if not isinstance(self.layout, str) or not self.layout:
            return f"layout must be a non-empty name, got {self.layout!r}"
        for name in ("num_joints", "num_persons", "num_coords", "num_frames", "hidden_size", "num_head",
                     "num_layer", "projector_dim"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                return f"{name} must be a positive integer, got {value!r}"
        if self.num_coords not in (2, 3):
            return f"num_coords must be 2 or 3, got {self.num_coords}"
        if self.num_frames > MAX_FRAMES:
            return f"num_frames must be at most {MAX_FRAMES} (the position table), got {self.num_frames}"
        if len(self.parents) != self.num_joints or not all(
                type(p) is int and 0 <= p < self.num_joints for p in self.parents):
            return f"parents must name one joint in 0..{self.num_joints - 1} for each of the {self.num_joints} joints"
        return hidden_size_problem(self.hidden_size, self.num_head)

    @property
    def t_input_size(self):
        """Width of a temporal token: one frame's M*V*C numbers (150 for the released model)."""
        return self.num_persons * self.num_joints * self.num_coords

    @property
    def s_input_size(self):
        """Width of a spatial token: one (person, joint)'s T*C numbers (192 for the released model)."""
        return self.num_frames * self.num_coords

    def to_dict(self):
        """Plain JSON-able values (parents as a list), what a checkpoint stores as `model_config`."""
        return {**asdict(self), "parents": list(self.parents)}

    @classmethod
    def from_dict(cls, record):
        """The inverse of to_dict; a ValueError of one line on an unknown or missing key or a bad value."""
        if not isinstance(record, dict):
            raise ValueError(f"model config: expected a dict, got {type(record).__name__}")
        names = [field.name for field in fields(cls)]
        unknown, missing = sorted(set(record) - set(names)), [name for name in names if name not in record]
        if unknown or missing:
            wrong = [f"unknown keys {unknown}"] * bool(unknown) + [f"missing keys {missing}"] * bool(missing)
            raise ValueError(f"model config: {', '.join(wrong)} (expected exactly {', '.join(names)})")
        if not isinstance(record["parents"], (list, tuple)):
            raise ValueError(f"model config: parents must be a list of joint indices, got {record['parents']!r}")
        return cls(**record)


# ---------------------------------------------------------------------------------------------
# Inputs: the three modalities and the two token layouts
# ---------------------------------------------------------------------------------------------

def make_modalities(x, names, parents):
    """Joint, bone and/or motion views of a joint batch x (N, C, T, V, M), computed on x's device."""
    builders = {
        "joint": lambda: x,
        "bone": lambda: joint_to_bone(x, parents),
        "motion": lambda: joint_to_motion(x),
    }
    return [builders[name]() for name in names]


def temporal_tokens(x):
    """One token per frame holding its (person, joint, xyz) numbers: (N, C, T, V, M) -> (N, T, M*V*C)."""
    n, c, t, v, m = x.shape
    return x.permute(0, 2, 4, 3, 1).reshape(n, t, m * v * c)  # (N, T, M*V*C)


def spatial_tokens(x):
    """One token per (person, joint) holding its (frame, xyz) numbers: (N, C, T, V, M) -> (N, M*V, T*C)."""
    n, c, t, v, m = x.shape
    return x.permute(0, 4, 3, 2, 1).reshape(n, m * v, t * c)  # (N, M*V, T*C)


def check_modalities(names):
    """Validate a modality subset and return it in canonical order (joint, bone, motion)."""
    unknown = set(names) - set(MODALITIES)
    if unknown or not names:
        raise ValueError(f"modalities must be a non-empty subset of {MODALITIES}, got {tuple(names)}")
    return tuple(name for name in MODALITIES if name in names)


# ---------------------------------------------------------------------------------------------
# Modality-specific embeddings and early fusion
# ---------------------------------------------------------------------------------------------

def embedding_mlp(input_size, hidden_size):
    """Linear -> LayerNorm -> ReLU -> Linear, applied to every token."""
    return nn.Sequential(
        nn.Linear(input_size, hidden_size),
        nn.LayerNorm(hidden_size),
        nn.ReLU(inplace=True),
        nn.Linear(hidden_size, hidden_size),
    )


class ModalityEmbedding(nn.Module):
    """Embeds one modality's temporal and spatial tokens (one MLP per stream)."""

    def __init__(self, t_input_size, s_input_size, hidden_size):
        super().__init__()
        self.t_embedding = embedding_mlp(t_input_size, hidden_size)
        self.s_embedding = embedding_mlp(s_input_size, hidden_size)

    def forward(self, x):
        # x: (N, C, T, V, M) -> ((N, T, H), (N, M*V, H))
        return self.t_embedding(temporal_tokens(x)), self.s_embedding(spatial_tokens(x))


class EarlyFusion(nn.Module):
    """Mean of the modalities' embeddings, then a bias-free Linear per stream.

    Averaging before the encoder is what lets one encoder pass serve all modalities at the cost
    of a uni-modal model.
    """

    def __init__(self, hidden_size):
        super().__init__()
        # Sequential wrappers keep the released parameter names (t_fusion.0.weight).
        self.t_fusion = nn.Sequential(nn.Linear(hidden_size, hidden_size, bias=False))
        self.s_fusion = nn.Sequential(nn.Linear(hidden_size, hidden_size, bias=False))

    def forward(self, t_embeddings, s_embeddings):
        t = torch.stack(t_embeddings).mean(0)  # (N, T, H)
        s = torch.stack(s_embeddings).mean(0)  # (N, M*V, H)
        return self.t_fusion(t), self.s_fusion(s)


# ---------------------------------------------------------------------------------------------
# Modality-agnostic encoder, shared by every modality and by the fused input
# ---------------------------------------------------------------------------------------------

class PositionalEncoding(nn.Module):
    """Fixed sinusoidal encoding (sin on even, cos on odd dimensions, base 10000) added to tokens."""

    def __init__(self, hidden_size, max_len=MAX_FRAMES):
        super().__init__()
        position = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)  # (L, 1)
        frequency = torch.exp(torch.arange(0, hidden_size, 2, dtype=torch.float32)
                              * (-math.log(10000.0) / hidden_size))  # (H/2,)
        pe = torch.zeros(max_len, hidden_size)
        pe[:, 0::2] = torch.sin(position * frequency)
        pe[:, 1::2] = torch.cos(position * frequency)
        # A buffer, not a parameter: it is part of the released state_dict but never trained.
        self.register_buffer("pe", pe.unsqueeze(0))  # (1, L, H)

    def forward(self, x):
        return x + self.pe[:, : x.shape[1]]  # (N, T, H)


def transformer(hidden_size, num_head, num_layer):
    """Post-norm Transformer encoder, feed-forward width H, ReLU, no dropout, no final norm."""
    layer = nn.TransformerEncoderLayer(hidden_size, num_head, dim_feedforward=hidden_size,
                                       dropout=0.0, activation="relu", batch_first=True)
    return nn.TransformerEncoder(layer, num_layer, enable_nested_tensor=False)


class ModalityAgnosticEncoder(nn.Module):
    """Temporal and spatial Transformer streams, each max-pooled over its tokens."""

    def __init__(self, hidden_size, num_head, num_layer, max_frames=MAX_FRAMES):
        super().__init__()
        self.pe = PositionalEncoding(hidden_size, max_frames)
        self.t_tr = transformer(hidden_size, num_head, num_layer)
        self.s_tr = transformer(hidden_size, num_head, num_layer)

    def forward(self, t_tokens, s_tokens):
        t = self.t_tr(self.pe(t_tokens)).amax(dim=1)  # (N, H)
        s = self.s_tr(s_tokens).amax(dim=1)  # (N, H)
        return torch.cat([t, s], dim=1)  # (N, 2H)


class UmURLEncoder(nn.Module):
    """Embeddings + early fusion + the shared encoder: skeleton batch -> feature (N, 2H).

    Takes any non-empty subset of the modalities: one goes straight to the encoder (uni-modal
    path), several are fused first. The default, all three, gives the multi-modal feature y_u.
    """

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.parents = config.parents
        t, s, h = config.t_input_size, config.s_input_size, config.hidden_size
        self.j_emb = ModalityEmbedding(t, s, h)
        self.b_emb = ModalityEmbedding(t, s, h)
        self.m_emb = ModalityEmbedding(t, s, h)
        self.mm_fusion = EarlyFusion(h)
        self.ma_encoder = ModalityAgnosticEncoder(h, config.num_head, config.num_layer)

    def embed(self, name, x):
        """One modality's (temporal, spatial) embeddings of its input x (N, C, T, V, M)."""
        embedding = {"joint": self.j_emb, "bone": self.b_emb, "motion": self.m_emb}[name]
        return embedding(x)

    def encode(self, inputs):
        """Encode {modality name: its input (N, C, T, V, M)}; fuse when there are several."""
        embeddings = [self.embed(name, x) for name, x in inputs.items()]
        if len(embeddings) == 1:
            t, s = embeddings[0]
        else:
            t, s = self.mm_fusion([e[0] for e in embeddings], [e[1] for e in embeddings])
        return self.ma_encoder(t, s)  # (N, 2H)

    def forward(self, x, modalities=MODALITIES):
        """x: joint batch (N, C, T, V, M); bones and motion are derived here on x's device."""
        names = check_modalities(modalities)
        return self.encode(dict(zip(names, make_modalities(x, names, self.parents))))


# ---------------------------------------------------------------------------------------------
# Pretraining: projectors, the objective, the model
# ---------------------------------------------------------------------------------------------

def projector(feature_size, output_size):
    """Linear -> BN -> ReLU -> Linear -> BN -> ReLU -> Linear (VICReg-style expander)."""
    return nn.Sequential(
        nn.Linear(feature_size, feature_size), nn.BatchNorm1d(feature_size), nn.ReLU(inplace=True),
        nn.Linear(feature_size, feature_size), nn.BatchNorm1d(feature_size), nn.ReLU(inplace=True),
        nn.Linear(feature_size, output_size),
    )


def variance_hinge(z, eps=1e-4):
    """mean_d relu(1 - sqrt(Var_batch(z_d) + eps)), unbiased variance: keeps every dimension alive."""
    std = torch.sqrt(z.var(dim=0) + eps)
    return F.relu(1.0 - std).mean()


def off_diagonal(matrix):
    """The off-diagonal entries of a square matrix, flattened."""
    d = matrix.shape[0]
    return matrix.flatten()[:-1].view(d - 1, d + 1)[:, 1:].flatten()


def covariance_penalty(z):
    """Sum of squared off-diagonal covariances (centred z, divided by B - 1), divided by D.

    For B < D (pretraining: a batch of B projections of width D = 4096) the (D, D) covariance is
    never formed: the squared entries of z^T z sum to those of the (B, B) Gram matrix z z^T (both
    are trace(z^T z z^T z)), and the diagonal of z^T z holds each dimension's sum of squares. That is
    B^2 D work instead of B D^2 and no D x D temporaries; equal up to float rounding.
    """
    b, d = z.shape
    z = z - z.mean(dim=0)
    if b < d:
        gram = z @ z.T  # (B, B)
        squares = z.pow(2).sum(dim=0)  # (D,): the diagonal of z^T z
        return (gram.pow(2).sum() - squares.pow(2).sum()) / ((b - 1) ** 2 * d)
    cov = (z.T @ z) / (b - 1)  # (D, D)
    return off_diagonal(cov).pow(2).sum() / d


@dataclass(frozen=True)
class LossWeights:
    """The coefficients of the objective; the defaults are the released ones (SPEC.md "Pretraining objective":
    loss = 5 (intra + inter) + sum over the six projections of 5 variance + 1 covariance).

    consistency: multiplies intra + inter; variance: each projection's variance hinge; covariance: its
    off-diagonal covariance penalty. pretrain.py takes them from --consistency-weight and friends.
    """

    consistency: float = 5.0
    variance: float = 5.0
    covariance: float = 1.0


RELEASED_LOSS_WEIGHTS = LossWeights()


def variance_covariance(z, variance_weight=RELEASED_LOSS_WEIGHTS.variance,
                        covariance_weight=RELEASED_LOSS_WEIGHTS.covariance):
    """The anti-collapse regulariser of one projection z (B, D)."""
    return variance_weight * variance_hinge(z) + covariance_weight * covariance_penalty(z)


def intra_modal_consistency(z_j, z_b, z_m, z_uj, z_ub, z_um):
    """Multi-modal projections agree with each uni-modal one: sum of three MSEs."""
    return F.mse_loss(z_j, z_uj) + F.mse_loss(z_b, z_ub) + F.mse_loss(z_m, z_um)


def inter_modal_consistency(z_j, z_b, z_m):
    """Uni-modal projections agree with their (not detached) mean c: sum of three MSEs."""
    c = (z_j + z_b + z_m) / 3
    return F.mse_loss(z_j, c) + F.mse_loss(z_b, c) + F.mse_loss(z_m, c)


def umurl_loss(z, weights=RELEASED_LOSS_WEIGHTS):
    """loss = consistency * (intra + inter) + sum of the six variance/covariance terms (LossWeights).

    z: dict of the six projections (B, D), already gathered over processes when distributed.
    Computed in float32 even under autocast: the covariance of 4096-wide fp16 projections
    overflows. Returns (total, parts): parts names each term ({"intra", "inter", "reg"}) as a detached
    scalar tensor; pretrain.py logs whatever parts it finds (meters, TensorBoard, log.jsonl, epoch line).
    """
    with torch.autocast(z["z_j"].device.type, enabled=False):
        z = {name: value.float() for name, value in z.items()}
        intra = intra_modal_consistency(z["z_j"], z["z_b"], z["z_m"], z["z_uj"], z["z_ub"], z["z_um"])
        inter = inter_modal_consistency(z["z_j"], z["z_b"], z["z_m"])
        reg = sum(variance_covariance(value, weights.variance, weights.covariance) for value in z.values())
        total = weights.consistency * (intra + inter) + reg
    return total, {"intra": intra.detach(), "inter": inter.detach(), "reg": reg.detach()}


class UmURL(nn.Module):
    """The pretraining model: the shared encoder (`backbone`) and three modality-aware projectors."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.backbone = UmURLEncoder(config)
        self.j_projector = projector(2 * config.hidden_size, config.projector_dim)
        self.b_projector = projector(2 * config.hidden_size, config.projector_dim)
        self.m_projector = projector(2 * config.hidden_size, config.projector_dim)

    def forward(self, v1, v2, v3, v4):
        """Four augmented joint views (N, C, T, V, M) -> the six projections (N, D) by name.

        y_j, y_b, y_m: joint of v1, bone of v2, motion of v3, each alone through the encoder;
        y_u: all three modalities of v4, fused. (One encoder pass over the four views stacked along N
        computes the same and was measured: no faster on a CPU, see benchmarks/README.md.)
        """
        parents = self.backbone.parents
        y_j = self.backbone.encode({"joint": v1})
        y_b = self.backbone.encode({"bone": joint_to_bone(v2, parents)})
        y_m = self.backbone.encode({"motion": joint_to_motion(v3)})
        return self.project(y_j, y_b, y_m, self.backbone(v4))

    def project(self, y_j, y_b, y_m, y_u):
        """The six projections of the four features (N, 2H). Each projector sees its uni-modal feature
        and y_u as two separate batches, y_u first: BatchNorm statistics are per batch and its running
        statistics depend on that order, as released."""
        z_uj, z_ub, z_um = self.j_projector(y_u), self.b_projector(y_u), self.m_projector(y_u)
        z_j, z_b, z_m = self.j_projector(y_j), self.b_projector(y_b), self.m_projector(y_m)
        return {"z_j": z_j, "z_b": z_b, "z_m": z_m, "z_uj": z_uj, "z_ub": z_ub, "z_um": z_um}


# ---------------------------------------------------------------------------------------------
# Downstream: encoder + linear head
# ---------------------------------------------------------------------------------------------

class DownstreamModel(nn.Module):
    """Encoder + Linear(2H, classes). With all three modalities the feature is y_u."""

    def __init__(self, config, num_classes, modalities=MODALITIES):
        super().__init__()
        self.config = config
        self.modalities = check_modalities(modalities)
        self.backbone = UmURLEncoder(config)
        self.fc = nn.Linear(2 * config.hidden_size, num_classes)
        # The released linear protocol: N(0, 0.01) weights, zero bias.
        nn.init.normal_(self.fc.weight, mean=0.0, std=0.01)
        nn.init.zeros_(self.fc.bias)

    def features(self, x):
        return self.backbone(x, self.modalities)  # (N, 2H)

    def forward(self, x):
        return self.fc(self.features(x))  # (N, classes)


# ---------------------------------------------------------------------------------------------
# Parameter counts
# ---------------------------------------------------------------------------------------------

def count_parameters(module):
    return sum(p.numel() for p in module.parameters())


if __name__ == "__main__":
    model = UmURL(UmURLConfig())
    total, encoder = count_parameters(model), count_parameters(model.backbone)
    print(f"UmURL at default sizes: {total / 1e6:.2f} M parameters in total, "
          f"{encoder / 1e6:.2f} M in the encoder, {(total - encoder) / 1e6:.2f} M in the projectors")
