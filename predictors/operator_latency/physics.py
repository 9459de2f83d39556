"""Physics of LLM-serving operators from a GPU spec sheet (numpy only; runtime path).

Ops and their shape arguments (arrays broadcast together):
- `gemm`: M tokens x K -> N outputs, dtype bf16 | fp8 (inputs 2 | 1 bytes, output 2 bytes).
- `attn_prefill`: B sequences of M new tokens each after N cached tokens (a chunk's context
  offset; 0 in aiconfigurator's tables), causal, H query heads, kv_heads, head_dim; the KV of
  `kv_dtype` (bf16 | fp8).
- `attn_decode`: B sequences with one new token over N + M cached tokens each.
- `allreduce`: N elements of bf16 across tp GPUs (ring).
Times in ms. `physics` adds tensor-core tile quantization over the SMs (GEMMs: the fastest of
`GEMM_TILES` output tiles, wave- and edge-padded, plus a share of the tiles' operand traffic
at the bandwidth, split-K for bf16 GEMMs with fewer tiles than SMs, fp8's
activation-quantization pass; weights stream from DRAM, but for rows timed on weights left
warm in the L2, `warm_l2`, see `gemm_mem_ms`), FlashAttention-style
tiling for attention (`attention`: causal query tiles x KV blocks with the softmax at the
FP32 non-tensor rate; split-KV decode), a launch floor per op and the interconnect; the
`roofline` is max(FLOPs / peak, bytes / bandwidth) alone. Spec units as in `servecast.gpus`.
Nothing depends on a GPU's name.
"""

from __future__ import annotations

import numpy as np

OPS = ("gemm", "attn_prefill", "attn_decode", "allreduce")
#: bytes per element of a dtype
BYTES = {"bf16": 2.0, "bfloat16": 2.0, "fp16": 2.0, "float16": 2.0, "fp8": 1.0}
#: spec key of the dense tensor peak per GEMM dtype
PEAK_KEY = {"bf16": "TensorFLOPs", "bfloat16": "TensorFLOPs", "fp16": "TensorFLOPs",
            "float16": "TensorFLOPs", "fp8": "FP8FLOPs"}
#: edge (elements) of the square output tile the residual's GEMM tile count uses
#: (`runtime.GEMM_CROSS`)
TILE = 128.0
#: K elements per split-K slice at least (GEMMs with fewer output tiles than SMs split K)
SPLIT_K_MIN = 1024.0
#: (rows, columns) of the GEMM output tiles a library picks among (CUTLASS / cuBLAS
#: heuristics); the physics takes the fastest after wave quantization and edge padding
GEMM_TILES = ((64.0, 64.0), (64.0, 128.0), (128.0, 128.0), (128.0, 256.0))
#: kernel launch + tail floor per op in SM clock cycles (one value for every GPU), divided
#: by the GPU's boost clock; GEMMs per dtype (`gemm_floor_ms`). Chosen by leave-one-GPU-out
#: inside the training GPUs (docs/results.md, step-time and GEMM sections)
FLOOR_CYCLES = {"gemm": 10000.0, "attn_prefill": 16000.0, "attn_decode": 16000.0}
GEMM_FLOOR_CYCLES = {"fp8": 4000.0}
#: DRAM bytes per byte of the operand tiles the GEMM's thread blocks read (one value for
#: every GPU, chosen by leave-one-GPU-out inside the training GPUs): an output tile of
#: rows x columns reads (rows + columns) x K operand elements, most served by the L2, so a
#: tiled GEMM adds this share of that traffic over the bandwidth to its compute time; a GPU
#: whose ridge point (peak / bandwidth) is high feels it even on compute-bound shapes
TILE_TRAFFIC = 0.03
#: elements per SM clock cycle of the per-tensor fp8 quantization of a GEMM's M x K
#: activations (vLLM's dynamic scale: a max reduction and a cast before the fp8 GEMM)
QUANT_ELEMS_PER_CYCLE = 4.0
#: warm L2: a benchmark that times a GEMM again and again on the same weights (aiconfigurator;
#: `warm_l2` = 1 on its rows, `data.operator_frame`) keeps the weights that fit in this
#: fraction of the L2 there and reads them at `GEMM_L2_BYTES_PER_CYCLE` per SM cycle at the
#: boost clock, per dtype; a serving step (`warm_l2` = 0, the default) streams every layer's
#: weights from DRAM
WARM_L2_FP8, WARM_L2_BF16 = 0.125, 0.0
GEMM_L2_BYTES_PER_CYCLE = 64.0
#: fixed cycles per decode-attention thread block (one (sequence, KV head, KV split)):
#: loading the query, the softmax merge and the write-back, whatever the context length
CTA_CYCLES = 2500.0
#: FlashAttention tiling: query rows per thread block (`ATTN_TILE_M_SMALL` when the
#: GQA-packed query rows of a (sequence, KV head) fit it) x KV columns per block
ATTN_TILE_M, ATTN_TILE_M_SMALL, ATTN_TILE_N = 128.0, 64.0, 128.0
#: fixed cycles per prefill thread block: loading its query tile, filling the KV pipeline
#: and writing the output back, whatever the number of KV blocks it walks (its own knob:
#: decode's `CTA_CYCLES` is chosen apart)
PREFILL_CTA_CYCLES = 5000.0
#: query-tile and output bytes a prefill block moves outside its KV pipeline, per query
#: row and head-dim element, at the block's share of the bandwidth (Mem_Bw / Num_Sm)
QO_BYTES = 2.0
#: prefill: share of the KV blocks the query tiles walk that come from DRAM again (each
#: query tile re-reads the KV of its sequence and head up to its diagonal); the bytes are
#: the larger of that traffic and the compulsory one (0 = every re-read hits the L2; off:
#: the inner folds disagree on it, docs/results.md, issue 23 h-attn4)
KV_REREAD = 0.0
#: non-tensor FP32 operations per attention score (scale, running max, exp, row sum,
#: rescale, convert), run at the spec's FP32 non-tensor rate (`SingleFLOPs`) beside the
#: tensor-core matmuls of the same block
SOFTMAX_OPS = 8.0
#: decode: KV tokens per split-KV block; while sequences x KV heads leave SMs idle, each
#: pair's KV is split (up to `MAX_SPLITS`, at least one block each) for wave efficiency
#: (`kv_splits`: FlashAttention-2's heuristic and its 0.8 / 0.85 thresholds)
DECODE_BLOCK, MAX_SPLITS = 256.0, 16.0
SPLIT_FILL, SPLIT_EFF = 0.8, 0.85
#: cycles of the pass that merges the KV splits' partial outputs (when there are splits;
#: 0 = folded into the launch floor, as inner validation chose)
COMBINE_CYCLES = 0.0
#: bandwidth one SM can draw, in units of its even share (Mem_Bw / Num_Sm)
SM_BW_SHARE = 16.0
#: decode KV that fits in `L2_FIT` x the L2 (warm from the previous step) streams at the
#: L2's rate, `L2_BYTES_PER_CYCLE` per SM per clock cycle (0 = always from DRAM), where
#: that beats the DRAM bandwidth
L2_FIT, L2_BYTES_PER_CYCLE = 1.0, 4.0
#: floor of the interconnect ops (ms; not clock-bound)
FLOOR_MS = {"allreduce": 0.004}
LAUNCH_MS = FLOOR_MS["allreduce"]  # the floor of a plain memory-bound pass
LINK_LATENCY_MS = 0.008  # per ring step of an all-reduce (one value for every GPU)
#: spec keys each op needs
NEEDS = {"gemm": ["Mem_Bw", "Num_Sm", "L2Cache", "Freq"],
         "attn_prefill": ["Mem_Bw", "Num_Sm", "TensorFLOPs", "L2Cache", "Freq", "SingleFLOPs"],
         "attn_decode": ["Mem_Bw", "Num_Sm", "TensorFLOPs", "L2Cache", "Freq", "SingleFLOPs"],
         "allreduce": ["Interconnect_Bw", "Mem_Bw", "Num_Sm", "TensorFLOPs", "L2Cache"]}
#: feature columns: 0-7 device-relative, 8-13 absolute (FLOPs, bytes, the GPU's specs),
#: 14 the op's side cost over the physics time (attention's `t_side`; 0 for other ops)
N_FEATURES = 15


def floor_ms(op: str, spec: dict) -> float:
    """Launch + tail floor of `op` (ms): `FLOOR_CYCLES` at the GPU's boost clock."""
    if op in FLOOR_MS:
        return FLOOR_MS[op]
    return FLOOR_CYCLES[op] / (spec["Freq"] * 1e3)


def gemm_floor_ms(spec: dict, dtype: str) -> float:
    """Launch + tail floor of a GEMM of `dtype` (ms), as `floor_ms`."""
    return GEMM_FLOOR_CYCLES.get(dtype, FLOOR_CYCLES["gemm"]) / (spec["Freq"] * 1e3)


def gemm_tile_ms(spec: dict, dtype: str, M, N, K) -> dict[str, np.ndarray]:
    """Tile time of each GEMM (ms) on its fastest `GEMM_TILES` tile: `t_tile` = `t_comp`
    (padded FLOPs at the peak over the SMs' wave efficiency) + `t_traffic` (`TILE_TRAFFIC`
    x the tiles' operand bytes over the bandwidth), with that tile's `blocks` (output tiles
    x split-K slices: bf16 GEMMs with fewer tiles than SMs split K into slices of at least
    `SPLIT_K_MIN`; vLLM's per-tensor fp8 GEMMs, CUTLASS scaled_mm, do not) and `pad`
    (padded over true output elements, >= 1)."""
    sms, peak = spec["Num_Sm"], spec[PEAK_KEY[dtype]] * 1e9
    M, N, K = _f(M), _f(N), _f(K)
    t_flop = 2.0 * M * N * K / peak * 1e3
    # operand bytes per FLOP x the traffic share, in units of the unquantized FLOP time
    per_flop = TILE_TRAFFIC * BYTES[dtype] / (spec["Mem_Bw"] * 1e9) * peak
    best = None
    for tm, tn in GEMM_TILES:
        rows, cols = np.ceil(M / tm), np.ceil(N / tn)
        tiles = rows * cols
        split = np.clip(np.floor(sms / tiles), 1.0, np.maximum(1.0, np.floor(K / SPLIT_K_MIN)))
        if dtype == "fp8":
            split = np.ones_like(split)
        blocks = tiles * split
        waves = np.maximum(1.0, np.ceil(blocks / sms))
        pad = rows * tm * cols * tn / np.maximum(M * N, 1.0)
        comp = pad * waves * sms / blocks  # compute time over the unquantized FLOP time
        traffic = per_flop * tiles * (tm + tn) / (2.0 * np.maximum(M * N, 1.0))
        cand = {"cost": comp + traffic, "comp": comp, "traffic": traffic, "blocks": blocks,
                "pad": pad}
        if best is None:
            best = cand
        else:
            win = cand["cost"] < best["cost"]
            best = {k: np.where(win, cand[k], best[k]) for k in best}
    return {"t_tile": best["cost"] * t_flop, "t_comp": best["comp"] * t_flop,
            "t_traffic": best["traffic"] * t_flop, "blocks": best["blocks"], "pad": best["pad"]}


def gemm_mem_ms(spec: dict, dtype: str, M, N, K, warm_l2=0.0, nbytes=None) -> np.ndarray:
    """Memory time of GEMMs (ms): the compulsory bytes (`nbytes`, by default `gemm_work`'s)
    over the bandwidth; where `warm_l2` is set, the weights up to the dtype's `WARM_L2_*`
    fraction of the L2 come from the L2 instead (`GEMM_L2_BYTES_PER_CYCLE` per SM cycle)."""
    if nbytes is None:
        nbytes = gemm_work(spec, dtype, M, N, K)[1]
    frac = WARM_L2_FP8 if dtype == "fp8" else WARM_L2_BF16
    hit = np.where(_f(warm_l2) > 0.0, np.minimum(_f(K) * _f(N) * BYTES[dtype],
                                                 frac * spec["L2Cache"] * 1e6), 0.0)
    return (hit / l2_bw(spec, GEMM_L2_BYTES_PER_CYCLE)
            + (nbytes - hit) / (spec["Mem_Bw"] * 1e9)) * 1e3


def l2_bw(spec: dict, bytes_per_cycle: float) -> float:
    """The L2's bandwidth (bytes/s) at `bytes_per_cycle` per SM per clock cycle of the
    boost clock."""
    return bytes_per_cycle * spec["Num_Sm"] * spec["Freq"] * 1e6


def quant_ms(spec: dict, dtype: str, M, K) -> np.ndarray:
    """Time of the fp8 activation-quantization pass (ms; zero for other dtypes):
    M x K elements at `QUANT_ELEMS_PER_CYCLE` per SM cycle at the boost clock."""
    if dtype != "fp8":
        return np.zeros(np.broadcast(_f(M), _f(K)).shape)
    return _f(M) * _f(K) / (QUANT_ELEMS_PER_CYCLE * spec["Num_Sm"] * spec["Freq"] * 1e3)


def attention(op: str, spec: dict, kv_dtype: str = "bf16", M=0, N=0, B=1, H=1, kv_heads=1,
              head_dim=128) -> dict[str, np.ndarray]:
    """FlashAttention-style kernel time of `op` (attn_prefill | attn_decode) on `spec`.

    Returns arrays: `ctas` (thread blocks), `t_comp` (ms: the SMs' makespan), `t_mem` (ms:
    the KV, query and output bytes at the bandwidth, and for decode the bytes of the
    biggest block at the bandwidth one SM draws), `t_side` (ms: a cost the roofline leaves
    out, for decode the fixed cycles of its thread blocks over the SMs (`CTA_CYCLES`), for
    prefill the softmax's non-tensor work over the SMs (`SOFTMAX_OPS` per score at
    `SingleFLOPs`)) and `busy`
    (SM time used / SM time spent, 0-1).

    Prefill: a thread block per query tile (`ATTN_TILE_M` rows, `ATTN_TILE_M_SMALL` for
    short chunks; the query heads sharing a KV head packed into one tile when they fit it)
    walks the KV blocks up to its last row (causal), each block a tensor-core matmul pair
    plus the softmax at the non-tensor FP32 rate; the makespan is the larger of the total
    work over the SMs and the longest block's walk, plus `PREFILL_CTA_CYCLES` per block.
    Decode: one thread block per (sequence, KV head, KV split) with the query heads of the
    KV head packed; the KV is split while sequences x KV heads leave SMs idle (`kv_splits`).
    """
    M, N, B, H = _f(M), _f(N), _f(B), _f(H)
    kvh, hd, kvb = _f(kv_heads), _f(head_dim), BYTES[kv_dtype]
    g = attn_tiles(op, spec, M, N, B, H, kvh)
    sms, clock, bw = spec["Num_Sm"], spec["Freq"] * 1e6, spec["Mem_Bw"] * 1e9
    sm_mma = spec["TensorFLOPs"] * 1e9 / sms  # FLOP/s of one SM
    sm_fp32 = spec["SingleFLOPs"] * 1e9 / sms
    if op == "attn_prefill":
        tm, tn = g["tile_m"], g["tile_n"]
        t_mma, t_soft = 4.0 * tm * tn * hd / sm_mma, SOFTMAX_OPS * tm * tn / sm_fp32
        # each block loads its query tile and writes its output outside the KV pipeline:
        # at an even share of the bandwidth when all SMs do, at most SM_BW_SHARE x that
        qo = QO_BYTES * g["rows"] * hd * 2.0 / (bw / sms)
        pro = PREFILL_CTA_CYCLES / clock
        total = g["ctas"] * (pro + qo) + g["walk"] * (t_mma + t_soft)
        span = np.maximum(total / sms, pro + qo / SM_BW_SHARE + g["longest"] * (t_mma + t_soft))
        nbytes = np.maximum(attn_bytes(op, M, N, B, H, kvh, hd, kvb),
                            KV_REREAD * g["walk"] * tn * hd * 2.0 * kvb)
        return {"ctas": g["ctas"], "t_comp": span * 1e3, "t_mem": nbytes / bw * 1e3,
                "t_side": g["walk"] * t_soft / sms * 1e3, "busy": total / (sms * span)}
    ctas, tokens = g["ctas"], g["tokens"]
    nbytes = attn_bytes(op, M, N, B, H, kvh, hd, kvb)
    bw = warm_bw(spec, nbytes)
    t_mem = np.maximum(nbytes / bw, tokens * 2.0 * hd * kvb / (SM_BW_SHARE * bw / sms))
    t_mem += np.where(g["splits"] > 1.0, COMBINE_CYCLES / clock, 0.0)  # merging the splits
    per = tokens * np.maximum(1.0, H / kvh) * (4.0 * hd / sm_mma + SOFTMAX_OPS / sm_fp32)
    span = np.maximum(ctas * per / sms, per)
    return {"ctas": ctas, "t_comp": span * 1e3, "t_mem": t_mem * 1e3,
            "t_side": ctas / sms * CTA_CYCLES / clock * 1e3,
            "busy": np.clip(ctas * per / (sms * span), 0.0, 1.0)}


def warm_bw(spec: dict, nbytes) -> np.ndarray:
    """Bandwidth (bytes/s) at which a decode kernel reads `nbytes` of KV (warm in the L2
    from the previous step): the L2's rate (`L2_BYTES_PER_CYCLE` per SM per clock cycle)
    when they fit in `L2_FIT` x the L2 and that beats DRAM, else the DRAM bandwidth."""
    bw = spec["Mem_Bw"] * 1e9
    l2 = l2_bw(spec, L2_BYTES_PER_CYCLE)
    return np.where(_f(nbytes) <= L2_FIT * spec["L2Cache"] * 1e6, np.maximum(bw, l2), bw)


def attn_bytes(op: str, M, N, B, H, kv_heads, head_dim, kv_bytes) -> np.ndarray:
    """Compulsory DRAM bytes of an attention kernel (the roofline's and the physics'):
    prefill reads the bf16 queries of its M new tokens, writes their bf16 output and reads
    the K and V of all M + N tokens once; decode reads the K and V of its N + M cached
    tokens and the bf16 query and output of its one token. `kv_bytes` per KV element."""
    M, N, B, H = _f(M), _f(N), _f(B), _f(H)
    kvh, hd = _f(kv_heads), _f(head_dim)
    if op == "attn_prefill":
        return B * hd * (M * 2.0 * H * 2.0 + (M + N) * 2.0 * kvh * kv_bytes)
    if op == "attn_decode":
        return B * ((N + M) * 2.0 * kvh * hd * kv_bytes + 2.0 * H * hd * 2.0)
    raise ValueError(op)


def attn_tiles(op: str, spec: dict, M, N, B, H, kv_heads) -> dict[str, np.ndarray]:
    """Thread-block geometry of an attention kernel (see `attention`). Prefill: `ctas`,
    `tile_m` x `tile_n`, `walk` (KV blocks all thread blocks walk), `longest` (those of
    the last query tile) and `rows` (query rows per block); decode: `ctas`, `splits` (per
    sequence and KV head) and `tokens` (KV tokens of the biggest block)."""
    M, N, B, H, kvh = _f(M), _f(N), _f(B), _f(H), _f(kv_heads)
    group = np.maximum(1.0, H / kvh)
    if op == "attn_prefill":
        pack = M * group <= ATTN_TILE_M  # GQA: the query heads of a KV head share a tile
        rows = np.where(pack, M * group, M)
        tm = np.where(rows <= ATTN_TILE_M_SMALL, ATTN_TILE_M_SMALL, ATTN_TILE_M)
        tn = np.minimum(ATTN_TILE_N, tm)
        tiles = np.ceil(rows / tm)
        last = np.ceil((N + M) / tn)
        units = B * np.where(pack, kvh, H)  # (sequence, head) columns of query tiles
        # causal: tile i < tiles - 1 walks the prefix and (i + 1) * tm new tokens
        walk = (tiles - 1.0) * (np.ceil(N / tn) + tm / tn * tiles / 2.0) + last
        return {"ctas": units * tiles, "tile_m": tm, "tile_n": tn, "walk": units * walk,
                "longest": last, "rows": rows / tiles}
    if op == "attn_decode":
        ctx = N + M
        blocks = np.ceil(ctx / DECODE_BLOCK)
        base = B * kvh
        splits = kv_splits(base, spec["Num_Sm"], blocks)
        return {"ctas": base * splits, "splits": splits,
                "tokens": np.minimum(ctx, np.ceil(blocks / splits) * DECODE_BLOCK)}
    raise ValueError(op)


def kv_splits(base, sms: float, blocks) -> np.ndarray:
    """KV splits per (sequence, KV head) of a decode kernel with `base` such pairs and
    `blocks` KV blocks each on `sms` SMs, by FlashAttention-2's `num_splits_heuristic`: none
    when the pairs fill `SPLIT_FILL` of the SMs; else, of the split counts up to
    `MAX_SPLITS`, the SMs and the blocks (those that change the blocks per split), the
    smallest whose wave efficiency (thread blocks over SMs, over its ceiling) is within
    `SPLIT_EFF` of the best one's."""
    base, blocks = np.broadcast_arrays(_f(base), _f(blocks))
    shape, base, blocks = base.shape, base.reshape(1, -1), blocks.reshape(1, -1)
    s = np.arange(1.0, MAX_SPLITS + 1.0)[:, None]  # candidate split counts x rows
    waves = base * s / sms
    eff = waves / np.ceil(waves)
    changes = (s == 1.0) | (np.ceil(blocks / s) != np.ceil(blocks / np.maximum(s - 1.0, 1.0)))
    eff = np.where(changes & (s <= np.minimum(min(MAX_SPLITS, sms), blocks)), eff, 0.0)
    first = np.argmax(eff >= SPLIT_EFF * eff.max(axis=0), axis=0) + 1.0
    return np.where(base[0] >= SPLIT_FILL * sms, 1.0, first).reshape(shape)


def _f(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def work(op: str, spec: dict, dtype: str = "bf16", kv_dtype: str = "bf16", M=0, N=0, K=0,
         B=1, H=1, kv_heads=1, head_dim=128, tp=1):
    """(flops, bytes, parallel tiles, peak FLOP/s, link bytes/s) of `op` on `spec`."""
    bw = spec["Mem_Bw"] * 1e9
    M, N, K, B, H = _f(M), _f(N), _f(K), _f(B), _f(H)
    kvh, hd, tp = _f(kv_heads), _f(head_dim), _f(tp)
    if op == "gemm":
        flops, nbytes, peak = gemm_work(spec, dtype, M, N, K)
        return flops, nbytes, gemm_tile_ms(spec, dtype, M, N, K)["blocks"], peak, bw
    peak = spec["TensorFLOPs"] * 1e9
    kvb = BYTES[kv_dtype]
    if op == "attn_prefill":
        # causal: QK^T and PV over half the square, plus the whole cached prefix
        flops = 2.0 * B * H * hd * M * (M + 1.0 + 2.0 * N)
        nbytes = attn_bytes(op, M, N, B, H, kvh, hd, kvb)
        tiles = attn_tiles(op, spec, M, N, B, H, kvh)["ctas"]
        return flops, nbytes, tiles, peak, bw
    if op == "attn_decode":
        ctx = N + M
        flops = 4.0 * B * H * hd * ctx
        nbytes = attn_bytes(op, M, N, B, H, kvh, hd, kvb)
        tiles = attn_tiles(op, spec, M, N, B, H, kvh)["ctas"]  # (sequence, KV head, split)
        return flops, nbytes, tiles, peak, bw
    if op == "allreduce":
        nbytes = N * 2.0
        link = spec["Interconnect_Bw"] * 0.5e9  # one direction
        return np.zeros_like(nbytes), nbytes, np.ones_like(nbytes) * tp, peak, link
    raise ValueError(op)


def gemm_work(spec: dict, dtype: str = "bf16", M=0, N=0, K=0, **_other
              ) -> tuple[np.ndarray, np.ndarray, float]:
    """(FLOPs, compulsory DRAM bytes, peak FLOP/s) of M x K -> N GEMMs of `dtype`: both
    operands read once at `BYTES[dtype]`, the bf16 output written once. Other shape
    arguments (an operator frame's attention columns) are ignored."""
    M, N, K = _f(M), _f(N), _f(K)
    return (2.0 * M * N * K, (M * K + K * N) * BYTES[dtype] + M * N * 2.0,
            spec[PEAK_KEY[dtype]] * 1e9)


def roofline(op: str, spec: dict, **shape) -> np.ndarray:
    """max(FLOPs / peak, bytes / bandwidth) in ms (all-reduce: ring bytes / link)."""
    if op == "gemm":  # no tile search: the roofline needs FLOPs and bytes alone
        flops, nbytes, peak = gemm_work(spec, **shape)
        return np.maximum(flops / peak, nbytes / (spec["Mem_Bw"] * 1e9)) * 1e3
    flops, nbytes, _tiles, peak, bw = work(op, spec, **shape)
    if op == "allreduce":
        p = _f(shape.get("tp", 2))
        return 2.0 * (p - 1.0) / p * nbytes / bw * 1e3
    return np.maximum(flops / peak, nbytes / bw) * 1e3


def features(op: str, spec: dict, **shape) -> tuple[np.ndarray, np.ndarray]:
    """(physics time in ms, feature matrix (n, N_FEATURES)) of `op` on `spec`.

    Features are logs of device-relative quantities (times, the kernel's intensity over the
    GPU's ridge point, wave efficiency, bytes over L2) and of the GPU's own spec (SMs, peak,
    bandwidth): a residual model reads them, never a GPU name.
    """
    if op == "gemm":  # one tile search per shape: its blocks and its time
        dtype = shape.get("dtype", "bf16")
        flops, nbytes, peak = gemm_work(spec, **shape)
        tile = gemm_tile_ms(spec, dtype, *(shape.get(k, 0) for k in "MNK"))
        tiles = tile["blocks"]
    else:
        flops, nbytes, tiles, peak, bw = work(op, spec, **shape)
    sms = spec["Num_Sm"]
    waves = np.maximum(1.0, np.ceil(tiles / sms))
    util = np.clip(tiles / (waves * sms), 1e-6, 1.0)
    if op == "allreduce":
        p = _f(shape.get("tp", 2))
        t_comp = 2.0 * (p - 1.0) * LINK_LATENCY_MS * np.ones_like(nbytes)
        t_mem = 2.0 * (p - 1.0) / p * nbytes / bw * 1e3
        t = t_comp + t_mem + FLOOR_MS[op]
        util = np.ones_like(t)
        ridge = np.log(spec["Interconnect_Bw"] / spec["Mem_Bw"]) * np.ones_like(t)
        side = np.zeros_like(t)
    elif op == "gemm":
        M, K = shape.get("M", 0), shape.get("K", 0)
        t_comp = tile["t_tile"]
        t_mem = gemm_mem_ms(spec, dtype, M, shape.get("N", 0), K, shape.get("warm_l2", 0.0),
                            nbytes)
        t = np.maximum(t_comp, t_mem) + quant_ms(spec, dtype, M, K) + gemm_floor_ms(spec,
                                                                                   dtype)
        side = np.zeros_like(t)
    elif op in ("attn_prefill", "attn_decode"):
        a = attention(op, spec, shape.get("kv_dtype", "bf16"),
                      **{k: shape[k] for k in ("M", "N", "B", "H", "kv_heads", "head_dim")
                         if k in shape})
        t_comp, t_mem, util = a["t_comp"], a["t_mem"], np.clip(a["busy"], 1e-6, 1.0)
        side = a["t_side"] * np.ones_like(t_comp)
        t = np.maximum(np.maximum(t_comp, t_mem), side) + floor_ms(op, spec)
    else:
        raise ValueError(op)
    if op != "allreduce":
        ridge = np.log((flops + 1.0) / nbytes) - np.log(peak / (spec["Mem_Bw"] * 1e9))
    tiny = 1e-9
    X = np.column_stack([
        np.log(t), np.log(t_comp + tiny), np.log(t_mem + tiny), ridge, util, np.log(waves),
        np.log(tiles + 1.0) - np.log(sms), np.log(nbytes / (spec["L2Cache"] * 1e6)),
        np.log(flops + 1.0), np.log(nbytes),
        np.full_like(t, np.log(sms)), np.full_like(t, np.log(peak)),
        np.full_like(t, np.log(spec["Mem_Bw"])), np.full_like(t, np.log(spec["L2Cache"])),
        np.log(side + tiny) - np.log(t),
    ])
    return t, X
