"""Fused StrucA in Triton (mmkd-method.md, sections 4 and 5): flash-attention style, memory O(N (d_S + d_T)).

One file, three layers:
  * kernels: `_struca_fwd_kernel` (per-row loss and O(N) row statistics) and `_struca_bwd_kernel`
    (dL/dU_hat by recomputing the tiles), built from shared @triton.jit tile helpers;
  * host launchers: `struca_forward`, `backward_coefficients`, `struca_backward`;
  * `StrucAFunction` (autograd over u_hat, v_hat, valid), applied by `mmkd.objectives.structure.struca_loss`
    (impl="triton"), which prepares the rows; this module imports nothing from mmkd.

Definitions (structure.py is the reference; its semantics are matched exactly). Unit rows U_hat (N, d_S),
V_hat (N, d_T); pair(i, j) = valid_i & valid_j & (i != j), the columns row i compares;
    A^S = U_hat U_hat^T / tau,   A^T = V_hat V_hat^T / tau   (never stored: BLOCK_M x BLOCK_N tiles);
    row i takes part iff valid_i and count_i = #{j : pair(i, j)} >= 2; N_r = number of such rows;
    kl:      l_i = KL(softmax_j A^T_ij || softmax_j A^S_ij)
    pearson: l_i = 1 - cov_i / sqrt((var^S_i + eps)(var^T_i + eps))   (population moments over j)
    L = sum_i l_i / max(N_r, 1).
Backward: with G_ij = dL/dA^S_ij (zero unless row i takes part and pair(i, j)), A^S symmetric gives
    dL/dU_hat = (G + G^T) U_hat / tau.
Each program owns BLOCK_M output rows and one BLOCK_DOUT-wide slice of d_S; for every column tile it
recomputes A^S_ij, A^T_ij once and forms both G_ij (row i's statistics) and G_ji = dL/dA^S_ji (column
j's statistics, same tile since A is symmetric), so there is no N x N buffer, no atomics and no race.
The price: the A tiles are recomputed once per d_S slice (cdiv(d_S, BLOCK_DOUT) times). The
launchers hand the kernels 16-aligned rows, feature sizes padded to a multiple of 16 with zeros
(`_aligned_rows`), the one layout that kernels/compile_check.py compiles and checks for spills.

Precision: tiles are loaded in the storage dtype (fp32/fp16/bf16; fp64 in the interpreter, for
gradcheck) and multiplied by tl.dot in DOT_DTYPE with accumulation in ACC_DTYPE (fp32; fp64 for fp64).
On a GPU DOT_DTYPE is the storage dtype; fp32 dots are "ieee" (exact, FMA, small tiles) unless
torch.backends.cuda.matmul.allow_tf32 is set, then "tf32" (tensor cores; cosines to ~1e-3, like the
reference's own matmul under that flag). In the interpreter (bf16 arithmetic is wrong there) tiles are
upcast to fp32 and dots are exact; the G tile is still rounded to the storage dtype as a GPU would.
G is normalised by a global scale before that rounding so fp16 never underflows it.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch.autograd.function import once_differentiable
from triton import knobs

INTERPRET: bool = bool(knobs.runtime.interpret)

_KL: tl.constexpr = tl.constexpr(0)
_NEG_INF: tl.constexpr = tl.constexpr(float("-inf"))
FORM_IDS = {"kl": 0, "pearson": 1}
# Row statistics the forward writes, stats[k, i] (row 0 is count_i in both forms).
STAT_NAMES = {"kl": ("count", "lse_s", "lse_t"),
              "pearson": ("count", "mean_s", "mean_t", "var_s", "var_t", "cov")}


def _config(block_m: int, block_n: int, block_d: int, warps: int, stages: int,
            block_dout: int | None = None) -> triton.Config:
    """A tile configuration. maxnreg=255: left to itself ptxas may cap a kernel at 128 or 168
    registers and spill a few bytes (seen for the small fp32 tiles); with the cap at the hardware
    limit it uses what it needs, without spills."""
    meta = {"BLOCK_M": block_m, "BLOCK_N": block_n, "BLOCK_D": block_d}
    if block_dout is not None:
        meta["BLOCK_DOUT"] = block_dout
    return triton.Config(meta, num_warps=warps, num_stages=stages, maxnreg=255)


# GPU tile configurations the autotuner picks from, per kernel and dot family: tensor-core dots
# ("mma": fp16, bf16, tf32) and fp32 "ieee" dots ("fma": operands held in registers, which need much
# smaller tiles; the one config per kernel here is the one found to compile without spills for both
# arches). Each compiles without register spills for sm_80 and sm_90 (kernels/compile_check.py).
GPU_CONFIGS = {
    ("fwd", "mma"): [_config(64, 64, 32, 8, 2), _config(64, 64, 32, 8, 3), _config(64, 64, 64, 8, 3),
                     _config(32, 64, 32, 4, 3)],
    ("fwd", "fma"): [_config(32, 32, 32, 4, 1)],
    ("bwd", "mma"): [_config(64, 64, 32, 8, 2, block_dout=64), _config(64, 64, 32, 8, 2, block_dout=128),
                     _config(64, 64, 32, 8, 2, block_dout=256)],
    ("bwd", "fma"): [_config(32, 32, 32, 4, 1, block_dout=32)],
}
# The interpreter cannot time configurations: one config each (tl.dot needs K >= 16).
INTERPRETER_CONFIGS = {"fwd": [_config(64, 64, 32, 1, 1)], "bwd": [_config(64, 64, 32, 1, 1, block_dout=32)]}


def dot_family(dot_dtype: tl.dtype, precision: str) -> str:
    """"fma" for fp32 dots in "ieee" precision, "mma" (tensor cores) otherwise."""
    return "fma" if dot_dtype == tl.float32 and precision == "ieee" else "mma"


def _autotune(kernel: str):
    """triton.autotune over GPU_CONFIGS[(kernel, family)], keyed on the sizes, the form and the dot
    precision (triton adds the tensors' dtypes to every key); a single config when interpreting."""
    if INTERPRET:
        return triton.autotune(configs=INTERPRETER_CONFIGS[kernel], key=[])
    configs = [config for (name, _), family in GPU_CONFIGS.items() if name == kernel for config in family]

    def prune(_configs, _named_args, **meta):
        return GPU_CONFIGS[(kernel, dot_family(meta["DOT_DTYPE"], meta["PRECISION"]))]

    return triton.autotune(configs=configs, key=["N_BUCKET", "D_S", "D_T", "FORM", "PRECISION"],
                           prune_configs_by={"early_config_prune": prune})


@triton.jit
def _load_valid(valid_ptr, idx, N):
    """valid (uint8, N) at positions idx as int1; out-of-range positions are invalid."""
    return tl.load(valid_ptr + idx, mask=idx < N, other=0) != 0


@triton.jit
def _gram_tile(x_ptr, stride, rows, cols, N, D, DOT_DTYPE: tl.constexpr, ACC_DTYPE: tl.constexpr,
               PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """(BLOCK_M, BLOCK_N) tile of X[rows] X[cols]^T, accumulated over D in BLOCK_D chunks."""
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_DTYPE)
    offs_d = tl.arange(0, BLOCK_D)
    for d_start in range(0, D, BLOCK_D):
        dims = d_start + offs_d
        in_d = dims[None, :] < D
        x_rows = tl.load(x_ptr + rows[:, None] * stride + dims[None, :], mask=(rows[:, None] < N) & in_d, other=0.0)
        x_cols = tl.load(x_ptr + cols[:, None] * stride + dims[None, :], mask=(cols[:, None] < N) & in_d, other=0.0)
        acc = tl.dot(x_rows.to(DOT_DTYPE), tl.trans(x_cols.to(DOT_DTYPE)), acc, input_precision=PRECISION)
    return acc


@triton.jit
def _logit_tiles(u_ptr, v_ptr, valid_ptr, rows, row_valid, col_start, N, D_S, D_T, stride_u, stride_v, inv_tau,
                 DOT_DTYPE: tl.constexpr, ACC_DTYPE: tl.constexpr, PRECISION: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """Column tile starting at col_start: (cols, A^S tile, A^T tile, pair mask), tiles (BLOCK_M, BLOCK_N)."""
    cols = col_start + tl.arange(0, BLOCK_N)
    col_valid = _load_valid(valid_ptr, cols, N)
    a_s = _gram_tile(u_ptr, stride_u, rows, cols, N, D_S, DOT_DTYPE, ACC_DTYPE, PRECISION,
                     BLOCK_M, BLOCK_N, BLOCK_D) * inv_tau
    a_t = _gram_tile(v_ptr, stride_v, rows, cols, N, D_T, DOT_DTYPE, ACC_DTYPE, PRECISION,
                     BLOCK_M, BLOCK_N, BLOCK_D) * inv_tau
    pair = row_valid[:, None] & col_valid[None, :] & (rows[:, None] != cols[None, :])
    return cols, a_s, a_t, pair


@triton.jit
def _kl_update(m_s, l_s, m_t, l_t, w, a_s, a_t, pair):
    """One column tile of the online log-sum-exp of both rows (flash-attention style).

    Running state per row: maxima m, l = sum_j exp(A_ij - m) over the columns seen, and
    w = sum_j exp(A^T_ij - m_t) (A^T_ij - A^S_ij), rescaled with l_t whenever m_t grows, so that at
    the end sum_j p^T_ij (A^T_ij - A^S_ij) = w / l_t.
    """
    m_s_new = tl.maximum(m_s, tl.max(tl.where(pair, a_s, _NEG_INF), axis=1))
    m_t_new = tl.maximum(m_t, tl.max(tl.where(pair, a_t, _NEG_INF), axis=1))
    # A row with no column yet keeps m = -inf; shift by 0 then so that exp() gets -inf, never NaN.
    shift_s = tl.where(m_s_new == _NEG_INF, 0.0, m_s_new)
    shift_t = tl.where(m_t_new == _NEG_INF, 0.0, m_t_new)
    p_s = tl.exp(tl.where(pair, a_s - shift_s[:, None], _NEG_INF))
    p_t = tl.exp(tl.where(pair, a_t - shift_t[:, None], _NEG_INF))
    rescale_t = tl.exp(m_t - shift_t)
    l_s = l_s * tl.exp(m_s - shift_s) + tl.sum(p_s, axis=1)
    l_t = l_t * rescale_t + tl.sum(p_t, axis=1)
    w = w * rescale_t + tl.sum(p_t * (a_t - a_s), axis=1)
    return m_s_new, l_s, m_t_new, l_t, w


@triton.jit
def _pearson_update(count, mean_s, mean_t, m2_s, m2_t, c_st, a_s, a_t, pair, ACC_DTYPE: tl.constexpr):
    """One column tile of the row moments, merged with Chan et al.'s pairwise update.

    The five raw sums (sum a, sum b, sum a^2, sum b^2, sum ab) would give var = E[a^2] - E[a]^2, which
    cancels catastrophically for near-constant rows (|A| <= 1/tau = 10, var ~ eps = 1e-6). Instead the
    tile's own moments are taken about the tile mean (exact in registers), then merged:
        n = n_a + n_b,  delta = mean_b - mean_a,  mean = mean_a + delta n_b / n,
        M2 = M2_a + M2_b + delta^2 n_a n_b / n,   C = C_a + C_b + delta^S delta^T n_a n_b / n.
    """
    n_b = tl.sum(pair.to(ACC_DTYPE), axis=1)
    n_b_safe = tl.maximum(n_b, 1.0)
    tile_mean_s = tl.sum(tl.where(pair, a_s, 0.0), axis=1) / n_b_safe
    tile_mean_t = tl.sum(tl.where(pair, a_t, 0.0), axis=1) / n_b_safe
    dev_s = tl.where(pair, a_s - tile_mean_s[:, None], 0.0)
    dev_t = tl.where(pair, a_t - tile_mean_t[:, None], 0.0)
    n_new = count + n_b
    frac_b = n_b / tl.maximum(n_new, 1.0)
    delta_s = tile_mean_s - mean_s
    delta_t = tile_mean_t - mean_t
    m2_s += tl.sum(dev_s * dev_s, axis=1) + delta_s * delta_s * count * frac_b
    m2_t += tl.sum(dev_t * dev_t, axis=1) + delta_t * delta_t * count * frac_b
    c_st += tl.sum(dev_s * dev_t, axis=1) + delta_s * delta_t * count * frac_b
    return n_new, mean_s + delta_s * frac_b, mean_t + delta_t * frac_b, m2_s, m2_t, c_st


@_autotune("fwd")
@triton.jit
def _struca_fwd_kernel(u_ptr, v_ptr, valid_ptr, loss_ptr, stats_ptr, N, N_BUCKET, D_S, D_T, stride_u, stride_v,
                       inv_tau, FORM: tl.constexpr, PEARSON_EPS: tl.constexpr, DOT_DTYPE: tl.constexpr,
                       ACC_DTYPE: tl.constexpr, PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                       BLOCK_D: tl.constexpr):
    """Row block -> loss[i] (0 unless row i takes part) and stats[:, i] (STAT_NAMES[form]).

    N_BUCKET (next power of two of N) only keys the autotuner, so N varying per batch does not retune.
    """
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_in = rows < N
    row_valid = _load_valid(valid_ptr, rows, N)
    count = tl.zeros((BLOCK_M,), dtype=ACC_DTYPE)
    # KL: (m_s, l_s, m_t, l_t, w); Pearson: (mean_s, mean_t, m2_s, m2_t, c_st); all zeros but the maxima.
    r0 = tl.zeros((BLOCK_M,), dtype=ACC_DTYPE)
    r1 = tl.zeros((BLOCK_M,), dtype=ACC_DTYPE)
    r2 = tl.zeros((BLOCK_M,), dtype=ACC_DTYPE)
    r3 = tl.zeros((BLOCK_M,), dtype=ACC_DTYPE)
    r4 = tl.zeros((BLOCK_M,), dtype=ACC_DTYPE)
    if FORM == _KL:
        r0 = tl.full((BLOCK_M,), _NEG_INF, dtype=ACC_DTYPE)
        r2 = tl.full((BLOCK_M,), _NEG_INF, dtype=ACC_DTYPE)
    for col_start in range(0, N, BLOCK_N):
        _, a_s, a_t, pair = _logit_tiles(u_ptr, v_ptr, valid_ptr, rows, row_valid, col_start, N, D_S, D_T,
                                         stride_u, stride_v, inv_tau, DOT_DTYPE, ACC_DTYPE, PRECISION,
                                         BLOCK_M, BLOCK_N, BLOCK_D)
        if FORM == _KL:
            r0, r1, r2, r3, r4 = _kl_update(r0, r1, r2, r3, r4, a_s, a_t, pair)
            count += tl.sum(pair.to(ACC_DTYPE), axis=1)
        else:
            count, r0, r1, r2, r3, r4 = _pearson_update(count, r0, r1, r2, r3, r4, a_s, a_t, pair, ACC_DTYPE)
    part = row_valid & (count >= 2.0)
    tl.store(stats_ptr + rows, count, mask=row_in)
    if FORM == _KL:
        # KL_i = sum_j p^T_ij ((A^T_ij - lse_t) - (A^S_ij - lse_s)) = w / l_t - lse_t + lse_s.
        l_s = tl.where(part, r1, 1.0)
        l_t = tl.where(part, r3, 1.0)
        lse_s = tl.where(part, r0 + tl.log(l_s), 0.0)
        lse_t = tl.where(part, r2 + tl.log(l_t), 0.0)
        loss = r4 / l_t - (lse_t - lse_s)
        tl.store(stats_ptr + N + rows, lse_s, mask=row_in)
        tl.store(stats_ptr + 2 * N + rows, lse_t, mask=row_in)
    else:
        n = tl.maximum(count, 1.0)
        var_s = r2 / n
        var_t = r3 / n
        cov = r4 / n
        loss = 1.0 - cov / tl.sqrt((var_s + PEARSON_EPS) * (var_t + PEARSON_EPS))
        tl.store(stats_ptr + N + rows, r0, mask=row_in)
        tl.store(stats_ptr + 2 * N + rows, r1, mask=row_in)
        tl.store(stats_ptr + 3 * N + rows, var_s, mask=row_in)
        tl.store(stats_ptr + 4 * N + rows, var_t, mask=row_in)
        tl.store(stats_ptr + 5 * N + rows, cov, mask=row_in)
    tl.store(loss_ptr + rows, tl.where(part, loss, 0.0), mask=row_in)


@triton.jit
def _coupling(a_s, a_t, pair, coef_ptr, idx, N, AXIS: tl.constexpr, FORM: tl.constexpr):
    """Scaled G restricted to the tile for the rows idx of G along AXIS (0: tile rows, G_ij; 1: tile
    columns, G_ji, using A^S_ji = A^S_ij). coef[k, i] come from `backward_coefficients`:
        kl:      G_ij = c_i (exp(A^S_ij - lse^S_i) - exp(A^T_ij - lse^T_i)),   coef = (c, lse_s, lse_t)
        pearson: G_ij = alpha_i (A^T_ij - mean^T_i) + beta_i (A^S_ij - mean^S_i),
                 coef = (alpha, beta, mean_t, mean_s)
    A row with c_0 = 0 (not taking part) contributes nothing; masked exponents are -inf, never inf * 0.
    """
    in_range = idx < N
    c0 = tl.load(coef_ptr + idx, mask=in_range, other=0.0)
    c1 = tl.load(coef_ptr + N + idx, mask=in_range, other=0.0)
    c2 = tl.load(coef_ptr + 2 * N + idx, mask=in_range, other=0.0)
    if AXIS == 0:
        on = pair & (c0 != 0.0)[:, None]
        c0 = c0[:, None]
        c1 = c1[:, None]
        c2 = c2[:, None]
    else:
        on = pair & (c0 != 0.0)[None, :]
        c0 = c0[None, :]
        c1 = c1[None, :]
        c2 = c2[None, :]
    if FORM == _KL:
        g = c0 * (tl.exp(tl.where(on, a_s - c1, _NEG_INF)) - tl.exp(tl.where(on, a_t - c2, _NEG_INF)))
    else:
        c3 = tl.load(coef_ptr + 3 * N + idx, mask=in_range, other=0.0)
        if AXIS == 0:
            c3 = c3[:, None]
        else:
            c3 = c3[None, :]
        g = tl.where(on, c0 * (a_t - c2) + c1 * (a_s - c3), 0.0)
    return g


@triton.jit
def _round_like_gpu(x, STORAGE: tl.constexpr, DOT_DTYPE: tl.constexpr):
    """x rounded to the storage dtype (what the GPU feeds its dot), returned in DOT_DTYPE. On a GPU the
    two dtypes agree and this is one cast. In the interpreter (DOT_DTYPE fp32) half-precision rounding
    is emulated so tests see the GPU's error; bf16 by hand (round to nearest even on the fp32 bits),
    the interpreter's own bf16 cast being wrong."""
    if STORAGE == DOT_DTYPE:
        y = x.to(DOT_DTYPE)
    elif STORAGE == tl.bfloat16:
        bits = x.to(tl.float32).to(tl.uint32, bitcast=True)
        bits = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
        y = bits.to(tl.float32, bitcast=True).to(DOT_DTYPE)
    else:
        y = x.to(STORAGE).to(DOT_DTYPE)
    return y


@_autotune("bwd")
@triton.jit
def _struca_bwd_kernel(u_ptr, v_ptr, valid_ptr, coef_ptr, scale_ptr, du_ptr, N, N_BUCKET, D_S, D_T, stride_u,
                       stride_v, stride_du, inv_tau, FORM: tl.constexpr, DOT_DTYPE: tl.constexpr,
                       ACC_DTYPE: tl.constexpr, PRECISION: tl.constexpr, BLOCK_M: tl.constexpr,
                       BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DOUT: tl.constexpr):
    """(row block, d_S slice) -> du[rows, slice] = scale * sum_j (G_ij + G_ji) U_hat[j, slice] / tau."""
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_valid = _load_valid(valid_ptr, rows, N)
    dims = tl.program_id(1) * BLOCK_DOUT + tl.arange(0, BLOCK_DOUT)
    acc = tl.zeros((BLOCK_M, BLOCK_DOUT), dtype=ACC_DTYPE)
    for col_start in range(0, N, BLOCK_N):
        cols, a_s, a_t, pair = _logit_tiles(u_ptr, v_ptr, valid_ptr, rows, row_valid, col_start, N, D_S, D_T,
                                            stride_u, stride_v, inv_tau, DOT_DTYPE, ACC_DTYPE, PRECISION,
                                            BLOCK_M, BLOCK_N, BLOCK_D)
        g = (_coupling(a_s, a_t, pair, coef_ptr, rows, N, 0, FORM)
             + _coupling(a_s, a_t, pair, coef_ptr, cols, N, 1, FORM))
        u_cols = tl.load(u_ptr + cols[:, None] * stride_u + dims[None, :],
                         mask=(cols[:, None] < N) & (dims[None, :] < D_S), other=0.0)
        g = _round_like_gpu(g, u_ptr.dtype.element_ty, DOT_DTYPE)
        acc = tl.dot(g, u_cols.to(DOT_DTYPE), acc, input_precision=PRECISION)
    acc *= tl.load(scale_ptr) * inv_tau
    tl.store(du_ptr + rows[:, None] * stride_du + dims[None, :], acc,
             mask=(rows[:, None] < N) & (dims[None, :] < D_S))


_TL_DTYPES = {torch.float16: tl.float16, torch.bfloat16: tl.bfloat16, torch.float32: tl.float32,
              torch.float64: tl.float64}


def kernel_dtypes(storage: torch.dtype) -> tuple[tl.dtype, tl.dtype, str]:
    """(DOT_DTYPE, ACC_DTYPE, PRECISION) constexprs for tiles stored in `storage`."""
    if storage not in _TL_DTYPES:
        raise TypeError(f"struca_triton: unsupported dtype {storage}")
    acc = tl.float64 if storage == torch.float64 else tl.float32
    dot = acc if INTERPRET else _TL_DTYPES[storage]
    precision = "tf32" if (not INTERPRET and storage == torch.float32
                           and torch.backends.cuda.matmul.allow_tf32) else "ieee"
    return dot, acc, precision


def _acc_torch_dtype(storage: torch.dtype) -> torch.dtype:
    return torch.float64 if storage == torch.float64 else torch.float32


def _check_inputs(u_hat: Tensor, v_hat: Tensor, valid: Tensor) -> None:
    if not INTERPRET and not u_hat.is_cuda:
        raise RuntimeError("struca_triton: needs CUDA tensors (or TRITON_INTERPRET=1 set before importing "
                           "mmkd.kernels.struca_triton, to run on CPU)")
    if not INTERPRET and u_hat.dtype == torch.float64:
        raise TypeError("struca_triton: fp64 runs only in the interpreter (for gradcheck); use fp32 on GPU")
    if u_hat.dtype != v_hat.dtype or u_hat.shape[0] != v_hat.shape[0] or valid.shape != (u_hat.shape[0],):
        raise ValueError(f"struca_triton: u_hat {tuple(u_hat.shape)} {u_hat.dtype}, v_hat {tuple(v_hat.shape)} "
                         f"{v_hat.dtype} and valid {tuple(valid.shape)} do not match")


def _aligned_rows(x: Tensor) -> Tensor:
    """x (N, d) as the kernels are compiled for it (kernels/compile_check.py): contiguous, 16-byte
    aligned, d a multiple of 16. Zero columns are appended where needed: they change no dot product.
    Unaligned rows would make triton specialise to scalar loads, which spill registers for fp32 tiles."""
    n, d = x.shape
    d_padded = triton.cdiv(d, 16) * 16
    if x.is_contiguous() and d == d_padded and x.data_ptr() % 16 == 0:
        return x
    padded = x.new_zeros(n, d_padded)
    padded[:, :d] = x
    return padded


def struca_forward(u_hat: Tensor, v_hat: Tensor, valid: Tensor, tau: float, form: str,
                   pearson_eps: float) -> tuple[Tensor, Tensor]:
    """Per-row losses (N,) and row statistics (len(STAT_NAMES[form]), N), in the accumulation dtype.

    u_hat (N, d_S), v_hat (N, d_T): unit rows (zero rows allowed if invalid), one dtype; valid (N,) bool;
    pearson_eps: added to each row variance (structure.PEARSON_EPS).
    """
    _check_inputs(u_hat, v_hat, valid)
    n = u_hat.shape[0]
    acc_dtype = _acc_torch_dtype(u_hat.dtype)
    row_loss = torch.empty(n, dtype=acc_dtype, device=u_hat.device)  # every entry is written
    stats = torch.empty(len(STAT_NAMES[form]), n, dtype=acc_dtype, device=u_hat.device)
    if n == 0:
        return row_loss, stats
    u_hat, v_hat = _aligned_rows(u_hat), _aligned_rows(v_hat)
    dot, acc, precision = kernel_dtypes(u_hat.dtype)
    grid = lambda meta: (triton.cdiv(n, meta["BLOCK_M"]),)  # noqa: E731
    _struca_fwd_kernel[grid](u_hat, v_hat, valid.to(torch.uint8), row_loss, stats, n,
                             triton.next_power_of_2(n), u_hat.shape[1], v_hat.shape[1], u_hat.stride(0),
                             v_hat.stride(0), 1.0 / tau, FORM=FORM_IDS[form], PEARSON_EPS=pearson_eps, DOT_DTYPE=dot,
                             ACC_DTYPE=acc, PRECISION=precision)
    return row_loss, stats


def backward_coefficients(stats: Tensor, valid: Tensor, grad_output: Tensor, form: str,
                          pearson_eps: float) -> tuple[Tensor, Tensor]:
    """Row coefficients of G (see `_coupling`), normalised, and the scale that undoes the normalisation.

    With base_i = grad_output / N_r for rows taking part (0 otherwise):
        kl:      dl_i/dA^S_ij = p^S_ij - p^T_ij                    ->  c_i = base_i
        pearson: dl_i/dA^S_ij = -[(A^T_ij - mean^T_i) - k_i (A^S_ij - mean^S_i)] / (n_i S_i),
                 S_i = sqrt((var^S_i + eps)(var^T_i + eps)), k_i = cov_i / (var^S_i + eps), eps = pearson_eps
                 (the mean's own derivative drops out: centred sums vanish)
                 ->  alpha_i = -base_i / (n_i S_i),  beta_i = base_i k_i / (n_i S_i).
    The multipliers are divided by scale = max_i (|c_i|) or max_i (|alpha_i| + |beta_i|), so the G tile
    is O(1) (|G| <= 1 for kl, <= ~2/tau for pearson) before its cast to the dot dtype: an fp16 G of
    magnitude 1/(N N_r) would underflow. Returns (coef (len, N), scale (1,)), in stats' dtype.
    """
    count = stats[0]
    part = valid & (count >= 2)
    base = torch.where(part, grad_output / part.sum().clamp_min(1), torch.zeros_like(count))
    if form == "kl":
        multipliers = base[None]
        rest = stats[1:3]
    else:
        _, mean_s, mean_t, var_s, var_t, cov = stats
        n_s = count.clamp_min(1) * torch.sqrt((var_s + pearson_eps) * (var_t + pearson_eps))
        multipliers = torch.stack([-base / n_s, base * cov / ((var_s + pearson_eps) * n_s)])
        rest = torch.stack([mean_t, mean_s])
    magnitude = multipliers.abs().sum(dim=0)
    scale = torch.cat([magnitude, magnitude.new_zeros(1)]).max()  # the appended 0 serves N = 0
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return torch.cat([multipliers / scale, rest]).contiguous(), scale.reshape(1)


def struca_backward(u_hat: Tensor, v_hat: Tensor, valid: Tensor, coef: Tensor, scale: Tensor, tau: float,
                    form: str) -> Tensor:
    """dL/dU_hat (N, d_S) in the accumulation dtype, from `backward_coefficients`' coef and scale."""
    n, d_s = u_hat.shape
    u_hat, v_hat = _aligned_rows(u_hat), _aligned_rows(v_hat)
    du = torch.empty(u_hat.shape, dtype=coef.dtype, device=u_hat.device)  # every entry is written
    if n == 0 or d_s == 0:
        return du[:, :d_s]
    dot, acc, precision = kernel_dtypes(u_hat.dtype)
    d_out = du.shape[1]
    grid = lambda meta: (triton.cdiv(n, meta["BLOCK_M"]), triton.cdiv(d_out, meta["BLOCK_DOUT"]))  # noqa: E731
    _struca_bwd_kernel[grid](u_hat, v_hat, valid.to(torch.uint8), coef, scale, du, n, triton.next_power_of_2(n),
                             d_out, v_hat.shape[1], u_hat.stride(0), v_hat.stride(0), du.stride(0), 1.0 / tau,
                             FORM=FORM_IDS[form], DOT_DTYPE=dot, ACC_DTYPE=acc, PRECISION=precision)
    return du[:, :d_s]


class StrucAFunction(torch.autograd.Function):
    """L = sum_i l_i / max(N_r, 1) from unit rows u_hat (N, d_S), v_hat (N, d_T), valid (N,) bool.

    Row preparation (normalisation, dtype) and dispatch are `mmkd.objectives.structure.struca_loss`'s
    (impl="triton"); this module imports nothing from mmkd. Saves only u_hat, v_hat, valid and O(N) row
    statistics; backward recomputes the tiles and returns dL/du_hat in u_hat's dtype (v_hat, the
    teacher, gets none). Result: 0-dim, accumulation dtype. Raises ValueError for an unknown form.
    """

    @staticmethod
    def forward(ctx, u_hat: Tensor, v_hat: Tensor, valid: Tensor, tau: float, form: str,
                pearson_eps: float) -> Tensor:
        if form not in FORM_IDS:
            raise ValueError(f"struca_triton: form must be one of {tuple(FORM_IDS)}, got {form!r}")
        row_loss, stats = struca_forward(u_hat, v_hat, valid, tau, form, pearson_eps)
        ctx.save_for_backward(u_hat, v_hat, valid, stats)
        ctx.tau, ctx.form, ctx.pearson_eps = tau, form, pearson_eps
        n_rows = (valid & (stats[0] >= 2)).sum()
        return row_loss.sum() / n_rows.clamp_min(1)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        u_hat, v_hat, valid, stats = ctx.saved_tensors
        coef, scale = backward_coefficients(stats, valid, grad_output, ctx.form, ctx.pearson_eps)
        du = struca_backward(u_hat, v_hat, valid, coef, scale, ctx.tau, ctx.form)
        return du.to(u_hat.dtype), None, None, None, None, None
