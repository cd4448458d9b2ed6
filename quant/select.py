"""Integer token selection: head-weighted scores, top-k / threshold keep, the package token.

The bit-exact reference of the hardware token selector (:mod:`tokensift.hw.selector.core`); the PyTorch side
(:mod:`tokensift.sw.selection`) follows the same selection rule. NumPy ``int64`` throughout, no floats
inside a kernel; every rounding goes through :func:`tokensift.quant.fixed.round_shift` and every
saturation through :meth:`tokensift.quant.fixed.FixedFormat.fit`.

Conventions
-----------
* A frame holds ``N`` tokens; index 0 is the class token, 1..N-1 are the patch tokens (the
  *candidates*). The class token is always kept and its score is ignored.
* ``k`` counts **patch tokens**: top-k keeps the class token plus the ``k`` best candidates, so a frame
  keeps ``1 + k`` tokens and ``0 <= k <= N - 1`` (as ``sw.selection.TokenSelector.num_keep``).
* Tie rule: a higher score wins; among equal scores the **lower index** wins. Kept tokens stay in their
  original order.
* Threshold mode keeps the class token plus every candidate whose score is **strictly greater** than
  the threshold (AS-ViT's hard inference rule).
* Scores are unsigned ``score_bits`` integers (higher = more worth keeping); features are signed
  ``feature_bits`` integers.

The hardware finds the k-th largest candidate score ``v`` by a radix (histogram) search,
:func:`radix_threshold`, and how many of the candidates equal to ``v`` to admit (``ties``); a token is
then kept when ``score > v`` or when it is one of the first ``ties`` candidates with ``score == v``.
Threshold mode is the same rule with ``v = T`` and ``ties = 0``.

>>> mask, idx = topk_keep([9, 5, 7, 7, 7, 1], k=2, n=6)
>>> idx.tolist()  # class token, the 7 at index 2 and the 7 at index 3 (lower index wins the tie)
[0, 2, 3]
>>> threshold_keep([0, 5, 7, 7, 7, 1], t=5, n=6)[1].tolist()
[0, 2, 3, 4]
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

from tokensift.checks import check_bool, check_int
from tokensift.quant.fixed import FixedFormat, OverflowCounter, Rounding, round_shift
from tokensift.quant.intmath import isqrt

__all__ = [
    "Mode",
    "Status",
    "RADIX_BITS",
    "FIELD_BITS",
    "MODE_BITS",
    "PACKAGE_RULES",
    "SCORE_FORMAT",
    "SelectorParams",
    "SelectResult",

    "head_importance",
    "head_weighted_scores",
    "radix_threshold",
    "keep_by_threshold",
    "topk_keep",
    "threshold_keep",
    "package_token",
    "order_key",
    "mass_keep_count",
    "check_runtime",
    "select_frame",
]

#: bits of one radix digit of the hardware's histogram search (16 histogram bins)
RADIX_BITS = 4
#: width of the run-time ``n_tokens`` and ``k`` fields of the selector's command
FIELD_BITS = 16
#: width of the selector command's ``mode`` field (:class:`Mode`)
MODE_BITS = 2
#: package rules of :func:`package_token` (and of the selector's ``package_sum`` command bit: 0 mean, 1 sum)
PACKAGE_RULES = ("mean", "sum")
#: default score format of :func:`head_weighted_scores`: unsigned, 16 bits, values in [0, 2)
SCORE_FORMAT = FixedFormat(bits=16, frac=15, signed=False)


class Mode(enum.IntEnum):
    """Selection rule of one frame (the hardware's ``mode`` command bit)."""

    TOPK = 0
    THRESHOLD = 1
    MASS = 2


class Status(enum.IntEnum):
    """Outcome of a frame's run-time settings; anything but ``OK`` means no token is output.

    Checked in this order: ``N_ZERO`` (N = 0), ``N_TOO_LARGE`` (N > n_max), ``MODE_UNSUPPORTED`` (a
    mode the selector was not built for: mass without ``mass=True``, or a ``mode`` field value no
    :class:`Mode` has), ``K_TOO_LARGE`` (top-k with k > N - 1, i.e. more patch tokens than the frame has),
    ``MASS_TOO_LARGE`` (mass mode with ``mass > 2**mass_frac``, a fraction above 1).
    """

    OK = 0
    N_ZERO = 1
    N_TOO_LARGE = 2
    K_TOO_LARGE = 3
    MASS_TOO_LARGE = 4
    MODE_UNSUPPORTED = 5


@dataclass(frozen=True, kw_only=True)
class SelectorParams:
    """Elaboration parameters of the token selector, shared by the reference, the hardware and its costs.

    Attributes:
        n_max: most tokens per frame (class token included), 2..4096.
        dim: features per token, 1..8192, a multiple of ``lanes``.
        score_bits: width of the unsigned scores, 1..24 (one score times one feature fits one DSP).
        feature_bits: width of the signed features, 2..16.
        lanes: features moved per stream beat, and parallel multipliers of the package token.
        package: whether the package-token datapath is built.
        weight_bits: width of a per-token package weight carried next to each score (``i_score`` then
            holds ``{score, weight}``), 1..24, for methods that rank by one value and fuse by another
            (SPViT ranks by a logit difference and weighs pruned tokens by their keep probability);
            0 (default): the score is the weight. Needs ``package``.
        weight_frac: fractional bits of the package weights (the scores when ``weight_bits`` is 0), which
            the ``sum`` package rule rounds away (:func:`package_token`'s ``score_frac``), 0..32.
        mass: whether SaiT's mass mode (:attr:`Mode.MASS`) is built.
        mass_frac: fractional bits of the run-time ``mass`` (a fraction ``mass / 2**mass_frac`` of the
            candidates' total score), 0..24.

    >>> p = SelectorParams(n_max=197, dim=384, lanes=16, package=True)
    >>> p.beats, p.digits, p.idx_bits, p.count_bits
    (24, 4, 8, 8)
    >>> SelectorParams(n_max=8, dim=30, lanes=8)
    Traceback (most recent call last):
    ...
    ValueError: dim must be a multiple of lanes, not dim=30 with lanes=8
    """

    n_max: int
    dim: int
    score_bits: int = 16
    feature_bits: int = 8
    lanes: int = 16
    package: bool = False
    weight_bits: int = 0
    weight_frac: int = 0
    mass: bool = False
    mass_frac: int = 15

    def __post_init__(self):
        check_int("n_max", self.n_max, low=2, high=4096)
        check_int("dim", self.dim, low=1, high=8192)
        check_int("score_bits", self.score_bits, low=1, high=24)
        check_int("feature_bits", self.feature_bits, low=2, high=16)
        check_int("lanes", self.lanes, low=1, high=256)
        check_bool("package", self.package)
        check_int("weight_bits", self.weight_bits, low=0, high=24)
        check_int("weight_frac", self.weight_frac, low=0, high=32)
        check_bool("mass", self.mass)
        check_int("mass_frac", self.mass_frac, low=0, high=24)
        if self.dim % self.lanes:
            raise ValueError(f"dim must be a multiple of lanes, not dim={self.dim} with lanes={self.lanes}")
        if self.weight_bits and not self.package:
            raise ValueError(f"weight_bits={self.weight_bits} needs package=True (the weights only feed the "
                             f"package token)")

    @property
    def beats(self) -> int:
        """Stream beats per token: ``dim // lanes``."""
        return self.dim // self.lanes

    @property
    def idx_bits(self) -> int:
        """Width of a token index (0..n_max-1)."""
        return max(1, (self.n_max - 1).bit_length())

    @property
    def count_bits(self) -> int:
        """Width of a token count (0..n_max)."""
        return self.n_max.bit_length()

    @property
    def digits(self) -> int:
        """Radix digits of the histogram search: ``ceil(score_bits / RADIX_BITS)``."""
        return -(-self.score_bits // RADIX_BITS)

    @property
    def sum_bits(self) -> int:
        """Width of a sum of up to n_max scores."""
        return self.score_bits + self.count_bits

    @property
    def package_weight_bits(self) -> int:
        """Width of the package token's weights: ``weight_bits``, or ``score_bits`` when the score is the weight."""
        return self.weight_bits or self.score_bits

    @property
    def weight_sum_bits(self) -> int:
        """Width of a sum of up to n_max package weights (the mean rule's divisor)."""
        return self.package_weight_bits + self.count_bits

    @property
    def acc_bits(self) -> int:
        """Width of the signed package accumulators (sum of n_max weight x feature products)."""
        return self.feature_bits + self.package_weight_bits + self.count_bits + 1

    @property
    def mass_bits(self) -> int:
        """Width of the command's ``mass`` field: ``mass_frac + 1`` (``mass = 2**mass_frac`` is the whole)."""
        return self.mass_frac + 1

    @property
    def feature_format(self) -> FixedFormat:
        return FixedFormat(bits=self.feature_bits, frac=0, signed=True, rounding=Rounding.HALF_UP)


# -- scores -----------------------------------------------------------------------------------------------
def _ints(name: str, values, ndim: int | None = None) -> np.ndarray:
    arr = np.asarray(values)
    if arr.dtype == object:
        arr = arr.astype(np.int64)
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must hold integers, not {arr.dtype}")
    arr = arr.astype(np.int64)
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension{'s' if ndim != 1 else ''}, not {arr.ndim}")
    return arr


def _in_range(name: str, arr: np.ndarray, low: int, high: int) -> None:
    if arr.size and (arr.min() < low or arr.max() > high):
        raise ValueError(f"{name} must lie in [{low}, {high}], not [{arr.min()}, {arr.max()}]")


def head_importance(head_outputs, *, out_frac: int = 8, feature_bits: int = 8) -> np.ndarray:
    """AS-ViT head importance: each head's output L2 norm, normalised across heads, as unsigned fixed point.

    ``head_outputs`` is (H, N, head_dim) signed ``feature_bits`` integers (the per-head attention outputs
    before the projection). For head ``h``: ``norm_h = isqrt(sum(x**2))`` (the floor of the L2
    norm in units of one feature LSB), then

        ``w_h = round_shift((norm_h << (out_frac + 1)) // sum(norm), 1, HALF_UP)``

    i.e. ``norm_h / sum(norm)`` rounded half up to ``out_frac`` fractional bits (the floor division
    keeps one extra bit, and the shared rounding rule rounds it away). When every norm is zero the heads
    weigh equally: ``w_h = round_shift((1 << (out_frac + 1)) // H, 1, HALF_UP)``.

    >>> x = np.zeros((2, 3, 4), dtype=np.int64); x[0] = 3; x[1] = 1
    >>> head_importance(x, out_frac=8).tolist()  # norms 10 and 3: 10/13 and 3/13 of 256
    [197, 59]
    """
    check_int("out_frac", out_frac, low=0, high=30)
    check_int("feature_bits", feature_bits, low=2, high=16)
    x = _ints("head_outputs", head_outputs, ndim=3)
    if x.shape[0] == 0:
        raise ValueError("head_outputs must hold at least one head")
    _in_range("head_outputs", x, -(1 << (feature_bits - 1)), (1 << (feature_bits - 1)) - 1)
    norms = isqrt((x * x).reshape(x.shape[0], -1).sum(axis=1))
    total = int(norms.sum())
    if total == 0:
        norms, total = np.ones_like(norms), x.shape[0]
    return round_shift((norms << (out_frac + 1)) // total, 1, Rounding.HALF_UP)


def head_weighted_scores(class_attn_rows, head_importance, *, attn_frac: int, importance_frac: int,
                         score: FixedFormat = SCORE_FORMAT,
                         counter: OverflowCounter | None = None) -> np.ndarray:
    """Token scores: per-head values (class attention, or logit differences), summed over heads weighted.

    ``class_attn_rows`` (H, N) hold each head's value per token with ``attn_frac`` fractional bits: the
    class token's attention (unsigned probabilities, row 0 of each head's integer softmax) or, with a
    signed ``score``, signed values such as SPViT's per-head keep-minus-drop logit differences.
    ``head_importance`` holds unsigned weights with ``importance_frac`` fractional bits, either one per
    head (H,) (:func:`head_importance`, or ``round(2**f / H)`` each for a mean over heads) or one per head
    **and token** (H, N) (AS-ViT's and SPViT's per-token head weights).
    The exact sum ``acc_i = sum_h a[h, i] * w[h(, i)]`` has ``attn_frac + importance_frac`` fractional
    bits; it is rounded to ``score.frac`` bits by ``round_shift(acc, attn_frac + importance_frac -
    score.frac, score.rounding)`` and saturated into ``score`` (values that did not fit are counted in
    ``counter``).

    >>> head_weighted_scores([[128, 64], [0, 256]], [128, 128], attn_frac=8, importance_frac=8,
    ...                      score=FixedFormat(bits=8, frac=7, signed=False)).tolist()
    [32, 80]
    >>> head_weighted_scores([[-64, 64], [32, 0]], [[256, 256], [256, 0]], attn_frac=6, importance_frac=8,
    ...                      score=FixedFormat(bits=8, frac=4, signed=True)).tolist()  # per token, signed
    [-8, 16]
    """
    check_int("attn_frac", attn_frac, low=0, high=30)
    check_int("importance_frac", importance_frac, low=0, high=30)
    if not isinstance(score, FixedFormat):
        raise TypeError(f"score must be a FixedFormat, not {type(score).__name__}")
    a = _ints("class_attn_rows", class_attn_rows, ndim=2)
    w = _ints("head_importance", head_importance)
    if w.ndim not in (1, 2):
        raise ValueError(f"head_importance must have 1 dimension (per head) or 2 (per head and token), "
                         f"not {w.ndim}")
    if w.shape[0] != a.shape[0] or (w.ndim == 2 and w.shape != a.shape):
        raise ValueError(f"head_importance must have shape ({a.shape[0]},) or {a.shape}, not {w.shape}")
    if score.signed:
        _in_range("class_attn_rows", a, -(1 << 31), (1 << 31) - 1)
    else:
        _in_range("class_attn_rows", a, 0, (1 << 31) - 1)
    _in_range("head_importance", w, 0, (1 << 31) - 1)
    acc = (a * (w[:, None] if w.ndim == 1 else w)).sum(axis=0)
    return score.fit(round_shift(acc, attn_frac + importance_frac - score.frac, score.rounding),
                     counter=counter, site="head_weighted_scores")


def order_key(scores, bits: int) -> np.ndarray:
    """Signed ``bits``-wide scores as the unsigned keys the selector ranks: the sign bit inverted.

    ``key = score + 2**(bits - 1)`` preserves the order (so top-k is unchanged) and maps a signed
    threshold ``t`` to ``order_key(t)`` (``score > t`` exactly when ``key > order_key(t)``); in hardware
    it is one inverter on the most significant bit.

    >>> order_key([-128, -1, 0, 127], 8).tolist()
    [0, 127, 128, 255]
    """
    check_int("bits", bits, low=1, high=62)
    s = _ints("scores", scores)
    _in_range("scores", s, -(1 << (bits - 1)), (1 << (bits - 1)) - 1)
    return s + (1 << (bits - 1))


def mass_keep_count(scores, n: int, mass: int, *, mass_frac: int) -> int:
    """SaiT's adaptive count: the fewest best-ranked candidates that hold a fraction ``mass / 2**mass_frac``
    of the candidates' total score.

    Candidates are ``scores[1:n]`` (unsigned), ranked by score, lower index first on ties (the shared tie
    rule). With ``before_j`` the sum of the scores ranked above candidate ``j`` and ``S`` the total,
    ``k = #{j : before_j * 2**mass_frac < mass * S}``: exact integers, no division, the same count as
    :func:`tokensift.sw.methods.sait.mass_keep_counts` on the real scores (at least one candidate when
    ``mass > 0``). When every candidate scores 0 all are kept (the float rule's ``0 < mass``), and so are
    they at ``mass = 2**mass_frac`` (density 1.0: SaiT's dense model).

    >>> mass_keep_count([0, 50, 10, 30, 10], 5, 58, mass_frac=7)  # 0.45: the 50 alone holds half
    1
    >>> mass_keep_count([0, 50, 10, 30, 10], 5, 109, mass_frac=7)  # 0.85: 50 + 30 = 80% is not enough
    3
    """
    s = _scores_for(scores, n)
    check_int("mass_frac", mass_frac, low=0, high=30)
    check_int("mass", mass, low=0, high=1 << mass_frac)
    cand = np.sort(s[1:])[::-1]
    total = int(cand.sum())
    if total == 0 or mass == 1 << mass_frac:
        return int(cand.size) if mass > 0 else 0
    before = np.cumsum(cand) - cand
    return int(np.count_nonzero((before << mass_frac) < mass * total))


# -- selection --------------------------------------------------------------------------------------------
def _scores_for(scores, n: int) -> np.ndarray:
    s = _ints("scores", scores, ndim=1)
    n = check_int("n", n, low=1, high=1 << 20)
    if s.shape[0] < n:
        raise ValueError(f"scores must hold at least n={n} values, not {s.shape[0]}")
    s = s[:n]
    if s.min() < 0:
        raise ValueError(f"scores must be non-negative, not {s.min()}")
    return s


def radix_threshold(scores, k: int, n: int, *, score_bits: int, radix_bits: int = RADIX_BITS) -> tuple[int, int]:
    """The hardware's histogram search: ``(v, ties)`` such that top-k keeps ``score > v`` plus ties.

    Candidates are ``scores[1:n]``. Digits of ``radix_bits`` are resolved from the most significant one
    down (``score_bits`` is padded up to a whole number of digits): a histogram of the current digit
    over the candidates whose higher digits equal the prefix found so far, then a scan of the bins from
    the top picks the first bin where the running count reaches the remaining rank. At the end ``v`` is
    the k-th largest candidate score and ``ties = k - #(score > v)`` (for ``k = 0``: ``v`` is all ones,
    ``ties = 0``).

    >>> radix_threshold([0, 3, 9, 9, 2], 2, 5, score_bits=4)
    (9, 2)
    >>> radix_threshold([0, 3, 9, 9, 2], 3, 5, score_bits=4)
    (3, 1)
    """
    s = _scores_for(scores, n)
    check_int("score_bits", score_bits, low=1, high=62)
    check_int("radix_bits", radix_bits, low=1, high=16)
    k = check_int("k", k, low=0, high=n - 1)
    _in_range("scores", s, 0, (1 << score_bits) - 1)
    cand = s[1:]
    digits = -(-score_bits // radix_bits)
    bins = 1 << radix_bits
    prefix, rank = 0, k
    for d in range(digits):
        low = (digits - 1 - d) * radix_bits
        matching = cand[(cand >> (low + radix_bits)) == prefix]
        hist = np.bincount((matching >> low) & (bins - 1), minlength=bins)
        cum, sel = 0, 0
        for b in range(bins - 1, -1, -1):
            if cum + int(hist[b]) >= rank:
                sel = b
                break
            cum += int(hist[b])
        prefix = (prefix << radix_bits) | sel
        rank -= cum
    return prefix, rank


def keep_by_threshold(scores, v: int, ties: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The compaction rule: keep index 0, every ``score > v``, and the first ``ties`` with ``score == v``.

    Returns ``(mask, indices)``: a bool mask over the ``n`` tokens and the kept indices in ascending
    (original) order.
    """
    s = _scores_for(scores, n)
    greater = s > v
    equal = s == v
    equal[0] = False
    admitted = equal & (np.cumsum(equal) <= ties)
    mask = greater | admitted
    mask[0] = True
    return mask, np.flatnonzero(mask).astype(np.int64)


def topk_keep(scores, k: int, n: int, *, score_bits: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Keep the class token and the ``k`` best of the ``n - 1`` patch tokens (lower index wins ties).

    ``scores[:n]`` are used (``scores[0]``, the class token's, is ignored); ``0 <= k <= n - 1``.
    ``score_bits`` defaults to the width of the largest score. Returns ``(mask, indices)`` as
    :func:`keep_by_threshold`; computed the hardware's way (:func:`radix_threshold` then compaction).
    """
    s = _scores_for(scores, n)
    bits = (int(s.max()).bit_length() or 1) if score_bits is None else score_bits
    v, ties = radix_threshold(s, k, n, score_bits=bits)
    return keep_by_threshold(s, v, ties, n)


def threshold_keep(scores, t: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Keep the class token and every patch token whose score is strictly greater than ``t``."""
    t = check_int("t", t, low=0, high=(1 << 62) - 1)
    return keep_by_threshold(scores, t, 0, n)


def package_token(features, scores, pruned_mask, *, feature_bits: int = 8, mode: str = "mean",
                  score_frac: int = 0, counter: OverflowCounter | None = None) -> np.ndarray:
    """The pruned tokens fused into one, with their scores as weights (SPViT, HeatViT, EViT).

    With ``acc_c = sum_{i pruned} s_i * x[i, c]`` and ``S = sum_{i pruned} s_i`` (exact integers):

    * ``mode="mean"`` (the score-weighted mean):
      ``p_c = fit(round_shift((2 * acc_c) // S, 1, HALF_UP))``. ``//`` is floor division (what a
      restoring divider computes); taking one extra quotient bit and rounding it half up gives exactly
      ``floor(acc_c / S + 1/2)``, i.e. ``acc_c / S`` rounded half up. The result is a convex combination
      of the features, so it always fits ``feature_bits`` (``fit`` is kept for safety).
    * ``mode="sum"`` (SPViT's released, unnormalised package token and EViT's fused token
      ``sum a_i x_i``): ``p_c = fit(round_shift(acc_c, score_frac, HALF_UP))`` with ``score_frac`` the
      scores' fractional bits; values that do not fit ``feature_bits`` saturate and are counted in
      ``counter`` (site ``package_token``).

    With no pruned token, or when the pruned scores sum to 0, the package token is all zeros.

    >>> package_token([[0, 0], [10, -10], [20, 5]], [0, 1, 2], [False, True, True]).tolist()
    [17, 0]
    >>> package_token([[0, 0], [10, -10], [20, 5]], [0, 1, 2], [False, True, True], mode="sum",
    ...               score_frac=1).tolist()  # (10 + 40) / 2, (-10 + 10) / 2
    [25, 0]
    """
    if mode not in ("mean", "sum"):
        raise ValueError(f"mode must be 'mean' or 'sum', not {mode!r}")
    check_int("score_frac", score_frac, low=0, high=40)
    x = _ints("features", features, ndim=2)
    s = _ints("scores", scores, ndim=1)
    m = np.asarray(pruned_mask)
    if m.dtype != bool:
        raise TypeError(f"pruned_mask must be a bool array, not {m.dtype}")
    if not (x.shape[0] == s.shape[0] == m.shape[0]):
        raise ValueError(f"features, scores and pruned_mask must have the same number of tokens, "
                         f"not {x.shape[0]}, {s.shape[0]} and {m.shape[0]}")
    fmt = FixedFormat(bits=check_int("feature_bits", feature_bits, low=2, high=16), frac=0)
    _in_range("features", x, fmt.min_int, fmt.max_int)
    _in_range("scores", s, 0, (1 << 40) - 1)
    w = np.where(m, s, 0)
    total = int(w.sum())
    if total == 0:
        return np.zeros(x.shape[1], dtype=np.int64)
    acc = (w[:, None] * x).sum(axis=0)
    if mode == "sum":
        return fmt.fit(round_shift(acc, score_frac, Rounding.HALF_UP), counter=counter, site="package_token")
    return fmt.fit(round_shift((2 * acc) // total, 1, Rounding.HALF_UP))


# -- one frame, as the hardware sees it -------------------------------------------------------------------
@dataclass
class SelectResult:
    """What the selector outputs for one frame.

    Attributes:
        status: :class:`Status`; when not ``OK`` nothing else is output (``n_kept`` is 0).
        n_kept: kept tokens, class token included, package token excluded.
        indices: original indices of the kept tokens, ascending (n_kept,).
        mask: bool keep mask over the frame's N tokens (all False when the status is not OK).
        tokens: kept features (n_kept, dim).
        package: the package token (dim,); None when not requested, when no token was pruned (as the
            SPViT model adds none then), or when the status is not OK. Pruned tokens whose weights sum to
            0 give an all-zero package token.
        threshold, ties: the compaction rule that was applied (see :func:`keep_by_threshold`).
        overflows: package-token values that saturated into ``feature_bits`` (the ``sum`` rule only; the
            selector's ``overflows`` counter adds them up).
    """

    status: Status
    n_kept: int
    indices: np.ndarray
    mask: np.ndarray
    tokens: np.ndarray
    package: np.ndarray | None
    threshold: int = 0
    ties: int = 0
    overflows: int = 0


def check_runtime(params: SelectorParams, *, n_tokens: int, mode: Mode, k: int | None = None,
                  threshold: int | None = None, mass: int | None = None) -> Status:
    """The status the hardware reports for a frame's run-time settings.

    Settings the command cannot even hold (negative, wider than its fields) raise ValueError; settings
    it can hold but that make no sense for the frame give a :class:`Status` other than ``OK``. Each mode
    needs its own setting: ``k`` (top-k), ``threshold`` or ``mass``.

    >>> p = SelectorParams(n_max=8, dim=4, lanes=4, mass=True, mass_frac=7)
    >>> [check_runtime(p, n_tokens=n, mode=Mode.TOPK, k=k).name for n, k in [(5, 4), (5, 5), (9, 0), (0, 0)]]
    ['OK', 'K_TOO_LARGE', 'N_TOO_LARGE', 'N_ZERO']
    >>> [check_runtime(p, n_tokens=5, mode=Mode.MASS, mass=m).name for m in (0, 128, 129)]
    ['OK', 'OK', 'MASS_TOO_LARGE']
    """
    if not isinstance(params, SelectorParams):
        raise TypeError(f"params must be SelectorParams, not {type(params).__name__}")
    if not isinstance(mode, Mode):
        raise TypeError(f"mode must be a Mode, not {type(mode).__name__}")
    n = check_int("n_tokens", n_tokens, low=0, high=(1 << FIELD_BITS) - 1)
    name, value, bits, rule = {Mode.TOPK: ("k", k, FIELD_BITS, "top-k"),
                               Mode.THRESHOLD: ("threshold", threshold, params.score_bits, "threshold"),
                               Mode.MASS: ("mass", mass, params.mass_bits, "mass")}[mode]
    if value is None:
        raise TypeError(f"{name} must be an integer in {rule} mode, not None")
    value = check_int(name, value, low=0, high=(1 << bits) - 1)
    if n == 0:
        return Status.N_ZERO
    if n > params.n_max:
        return Status.N_TOO_LARGE
    if mode is Mode.MASS and not params.mass:
        return Status.MODE_UNSUPPORTED
    if mode is Mode.TOPK and value > n - 1:
        return Status.K_TOO_LARGE
    if mode is Mode.MASS and value > 1 << params.mass_frac:
        return Status.MASS_TOO_LARGE
    return Status.OK


def select_frame(params: SelectorParams, scores, features, *, mode: Mode, k: int | None = None,
                 threshold: int | None = None, mass: int | None = None, package: bool | None = None,
                 package_rule: str = "mean", weights=None) -> SelectResult:
    """The selector's output for one frame of ``N = len(scores)`` tokens, bit for bit.

    ``features`` is (N, dim). Top-k keeps the ``k`` best candidates, threshold mode those scoring above
    ``threshold``, mass mode the ``k = mass_keep_count(scores, N, mass, mass_frac=params.mass_frac)`` best
    (then the top-k rule). ``package`` defaults to ``params.package`` and needs it; ``package_rule``
    (``"mean"`` or ``"sum"``, :func:`package_token`) fuses the pruned tokens weighted by ``weights`` (N
    unsigned ``weight_bits`` integers, needed exactly when the selector was built with ``weight_bits``)
    or by the scores. Invalid run-time settings give a result with a non-``OK`` status and no tokens (see
    :func:`check_runtime`).

    >>> p = SelectorParams(n_max=6, dim=1, lanes=1, score_bits=4, package=True, weight_bits=4, weight_frac=1)
    >>> r = select_frame(p, [0, 9, 2, 7, 1], [[0], [1], [-4], [3], [5]], mode=Mode.TOPK, k=2,
    ...                  package_rule="sum", weights=[0, 1, 3, 1, 2])
    >>> r.indices.tolist(), r.package.tolist()  # (3 * -4 + 2 * 5) / 2 = -1
    ([0, 1, 3], [-1])
    """
    if not isinstance(params, SelectorParams):
        raise TypeError(f"params must be SelectorParams, not {type(params).__name__}")
    package = params.package if package is None else package
    check_bool("package", package)
    if package and not params.package:
        raise ValueError("package token requested from a selector built without package=True")
    if package_rule not in PACKAGE_RULES:
        raise ValueError(f"package_rule must be 'mean' or 'sum', not {package_rule!r}")
    s = _ints("scores", scores, ndim=1)
    x = _ints("features", features, ndim=2)
    n = s.shape[0]
    if x.shape != (n, params.dim):
        raise ValueError(f"features must have shape ({n}, {params.dim}), not {x.shape}")
    _in_range("scores", s, 0, (1 << params.score_bits) - 1)
    fmt = params.feature_format
    _in_range("features", x, fmt.min_int, fmt.max_int)
    if params.weight_bits:
        if weights is None:
            raise TypeError(f"weights must be given to a selector built with weight_bits={params.weight_bits}, "
                            f"not None")
        w = _ints("weights", weights, ndim=1)
        if w.shape[0] != n:
            raise ValueError(f"weights must hold one value per token ({n}), not {w.shape[0]}")
        _in_range("weights", w, 0, (1 << params.weight_bits) - 1)
    elif weights is not None:
        raise ValueError("weights given to a selector built without weight_bits (its package weights are "
                         "the scores)")
    else:
        w = s
    status = check_runtime(params, n_tokens=n, mode=mode, k=k, threshold=threshold, mass=mass)
    if status is not Status.OK:
        return SelectResult(status, 0, np.zeros(0, np.int64), np.zeros(n, bool),
                            np.zeros((0, params.dim), np.int64), None)
    if mode is Mode.THRESHOLD:
        v, ties = int(threshold), 0
    else:
        if mode is Mode.MASS:
            k = mass_keep_count(s, n, mass, mass_frac=params.mass_frac)
        v, ties = radix_threshold(s, k, n, score_bits=params.score_bits)
    mask, idx = keep_by_threshold(s, v, ties, n)
    pruned = ~mask
    pkg, counter = None, OverflowCounter()
    if package and pruned.any():
        pkg = package_token(x, w, pruned, feature_bits=params.feature_bits, mode=package_rule,
                            score_frac=params.weight_frac, counter=counter)
    return SelectResult(status, int(idx.size), idx, mask, x[idx], pkg, v, ties, counter.total)
