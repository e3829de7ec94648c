#!/usr/bin/env python3
"""mmq_model.py: mmq's index arithmetic (runtime/cuda/kernels.cuh), checked
without a GPU.

A transcription of mmq in plain Python, index for index: the device layouts
(quants, scale rows padded to 8), the cp.async stage copies with their zero
fill, the fragment reads from a stage, the mma per the PTX ISA's m16n8k32
.s8 fragment layouts, the K slices and mmq_finish. It checks y = W·x against
a plain evaluation of the same int8 arithmetic, for shapes with partial row
groups, token tiles and chunks. It checks the arithmetic, not the CUDA code:
keep the two in step when changing either. Run: python3 hack/gpu/mmq_model.py
"""
import random, struct, sys
random.seed(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
def s8(b): return b - 256 if b >= 128 else b
def u32(bs, o): return bs[o] | bs[o+1] << 8 | bs[o+2] << 16 | bs[o+3] << 24
def f16(x): return struct.unpack('<e', struct.pack('<e', x))[0]

kMMQWarps, kMMQRowTiles, kMMQChunk, kMMQStages = 4, 4, 128, 3
kMMQRows = kMMQWarps * kMMQRowTiles * 8

def shape(T, MT):
    half = T == 1
    bb = 64 if half else 32 if T == 8 else 16; ab = 64 if half else 32; kc = kMMQChunk // bb
    pad = 32 if T == 8 else 16
    wpitch = kMMQChunk + pad; apitch = kc * ab + pad
    tokens = 16 * MT
    w_off = 0; a_off = w_off + kMMQRows * wpitch; wd_off = a_off + tokens * apitch
    adpitch = kc + 1
    ad_off = wd_off + (0 if half else kMMQRows * kc * 2)
    stage = (ad_off + (0 if half else tokens * adpitch * 4) + 15) // 16 * 16
    return dict(bb=bb, ab=ab, kc=kc, wpitch=wpitch, apitch=apitch, adpitch=adpitch, tokens=tokens, w_off=w_off,
                a_off=a_off, wd_off=wd_off, ad_off=ad_off, stage=stage)

def mma(A_regs, B_regs):
    A = [[0]*32 for _ in range(16)]; B = [[0]*8 for _ in range(32)]
    for lane in range(32):
        g, t = lane // 4, lane % 4
        for r in range(4):
            for j in range(4):
                b = (A_regs[lane][r] >> (8*j)) & 255; i = r*4 + j
                row = g if (i < 4 or 8 <= i < 12) else g + 8
                A[row][t*4 + (i & 3) + (16 if i >= 8 else 0)] = s8(b)
        for r in range(2):
            for j in range(4):
                b = (B_regs[lane][r] >> (8*j)) & 255; i = r*4 + j
                B[t*4 + (i & 3) + (16 if i >= 4 else 0)][g] = s8(b)
    return [[sum(A[(g if i < 2 else g + 8)][k] * B[k][t*2 + (i & 1)] for k in range(32))
             for i in range(4)] for g, t in ((l // 4, l % 4) for l in range(32))]

def tile_outputs(rows0, t0, MT, rows, n):
    # The outputs a thread block stores, as mmq's store loop: (warp, lane,
    # mt, nt, h, t, r) for rows r, r+1 of token t, inside the matrix and batch.
    for warp in range(kMMQWarps):
        wrow = rows0 + warp * kMMQRowTiles * 8
        for mt in range(MT):
            for nt in range(kMMQRowTiles):
                for lane in range(32):
                    g, i4 = lane // 4, lane % 4; r = wrow + nt*8 + 2*i4
                    for h in range(2):
                        t = t0 + mt*16 + g + 8*h
                        if r < rows and t < n:
                            yield warp, lane, mt, nt, h, t, r

def h16(word, j):  # half j of a 32-bit word, as a float
    return struct.unpack('<e', struct.pack('<H', (word >> (16*j)) & 0xFFFF))[0]

def mma_f16(A_regs, B_regs):
    # m16n8k16 .f16: A_regs[lane][0..3], B_regs[lane][0..1] -> D[lane][0..3] (PTX ISA).
    A = [[0.0]*16 for _ in range(16)]; B = [[0.0]*8 for _ in range(16)]
    for lane in range(32):
        g, t = lane // 4, lane % 4
        for r in range(4):
            for j in range(2):
                row = g if r in (0, 2) else g + 8
                A[row][2*t + j + (8 if r >= 2 else 0)] = h16(A_regs[lane][r], j)
        for r in range(2):
            for j in range(2):
                B[2*t + j + 8*r][g] = h16(B_regs[lane][r], j)
    return [[sum(A[(g if i < 2 else g + 8)][k] * B[k][t*2 + (i & 1)] for k in range(16))
             for i in range(4)] for g, t in ((l // 4, l % 4) for l in range(32))]

def run_f16(rows, cols, n, splits_want):
    # mmq<1, MT>: halves times halves, no scales; the same loads, pipeline
    # slices and stores as the int8 types.
    blocks = cols // 32
    MT = min((n + 15) // 16, 4); S = shape(1, MT); kc = S['kc']
    wvals = [[f16(random.uniform(-1, 1)) for _ in range(cols)] for _ in range(rows)]
    wq = bytearray(b''.join(struct.pack('<e', v) for row in wvals for v in row))
    nbuf = (n + 7) // 8 * 8
    avals = [[f16(random.uniform(-1, 1)) for _ in range(cols)] for _ in range(nbuf)]
    ah = bytearray(b''.join(struct.pack('<e', v) for row in avals for v in row))
    per = ((blocks + splits_want - 1) // splits_want + kc - 1) // kc * kc; per = max(per, kc)
    splits = (blocks + per - 1) // per
    grid = ((rows + kMMQRows - 1) // kMMQRows, splits, (n + 16*MT - 1) // (16*MT))
    part = {}
    for bx in range(grid[0]):
        for by in range(grid[1]):
            for bz in range(grid[2]):
                rows0 = bx * kMMQRows; t0 = bz * S['tokens']
                first = min(blocks, by * per); end = min(blocks, first + per)
                acc = {}
                for c in range((end - first + kc - 1) // kc):
                    kb0 = first + c * kc; valid = min(kc, end - kb0)
                    st = bytearray(S['stage'])
                    for p in range(kMMQRows * 8):
                        row, prt = p // 8, p % 8; r = rows0 + row
                        if r < rows and prt * 16 < valid * S['bb']:
                            src = r * blocks * S['bb'] + kb0 * S['bb'] + prt * 16
                            o = S['w_off'] + row*S['wpitch'] + prt*16
                            st[o:o+16] = wq[src:src+16]
                    apieces = kc * S['ab'] // 16
                    for p in range(S['tokens'] * apieces):
                        tok, prt = p // apieces, p % apieces; t = t0 + tok
                        if t < n and prt * 16 < valid * S['ab']:
                            src = (t * cols + kb0 * 32) * (S['ab'] // 32) + prt * 16
                            o = S['a_off'] + tok*S['apitch'] + prt*16
                            st[o:o+16] = ah[src:src+16]
                    for warp in range(kMMQWarps):
                        wrow = warp * kMMQRowTiles * 8
                        for ks in range(kMMQChunk // 32):
                            for nt in range(kMMQRowTiles):
                                B_regs = []
                                for lane in range(32):
                                    g, i4 = lane // 4, lane % 4
                                    p = S['w_off'] + (wrow + nt*8 + g) * S['wpitch'] + ks*32 + i4*4
                                    B_regs.append((u32(st, p), u32(st, p + 16)))
                                for mt in range(MT):
                                    A_regs = []
                                    for lane in range(32):
                                        g, i4 = lane // 4, lane % 4; af = [0]*4
                                        for h in range(2):
                                            p = S['a_off'] + (mt*16 + g + 8*h) * S['apitch'] + ks*32 + i4*4
                                            af[h], af[2+h] = u32(st, p), u32(st, p + 16)
                                        A_regs.append(af)
                                    D = mma_f16(A_regs, B_regs)
                                    for lane in range(32):
                                        for e in range(4):
                                            key = (warp, lane, mt, nt, e); acc[key] = acc.get(key, 0.0) + D[lane][e]
                for warp, lane, mt, nt, h, t, r in tile_outputs(rows0, t0, MT, rows, n):
                    assert (by, t, r) not in part
                    part[(by, t, r)] = (acc.get((warp, lane, mt, nt, 2*h), 0.0), acc.get((warp, lane, mt, nt, 2*h+1), 0.0))
    worst = 0.0; missing = 0
    for t in range(n):
        for r in range(0, rows, 2):
            if any((s_, t, r) not in part for s_ in range(splits)): missing += 1; continue
            for j in range(2):
                got = sum(part[(s_, t, r)][j] for s_ in range(splits))
                want = sum(wvals[r+j][k] * avals[t][k] for k in range(cols))
                worst = max(worst, abs(got - want) / (abs(want) + 1e-3))
    print(f"T=1 (F16) rows={rows} cols={cols} n={n} MT={MT} per={per} splits={splits} grid={grid}: missing {missing}, worst rel err {worst:.2e}")
    return missing == 0 and worst < 1e-9

def run(T, rows, cols, n, splits_want):
    blocks = cols // 32; ds = (blocks + 7) // 8 * 8
    MT = min((n + 15) // 16, 4); S = shape(T, MT); kc = S['kc']; bb = S['bb']
    # weights: device layout
    if T == 8:
        wvals = [[random.randint(-127, 127) for _ in range(cols)] for _ in range(rows)]
        wq = bytearray(v & 255 for row in wvals for v in row)
    else:
        wvals = [[random.randint(-8, 7) for _ in range(cols)] for _ in range(rows)]
        wq = bytearray()
        for row in wvals:
            for b in range(blocks):
                blk = row[b*32:(b+1)*32]
                wq += bytes(((blk[j] + 8) | ((blk[j+16] + 8) << 4)) for j in range(16))
    wd = [0.0] * (rows * ds)
    for r in range(rows):
        for b in range(blocks): wd[r*ds + b] = f16(random.uniform(0.001, 0.01))
    # activations: int8 blocks + float scales, buffers of whole groups of 8 tokens
    nbuf = (n + 7) // 8 * 8
    avals = [[random.randint(-127, 127) for _ in range(cols)] for _ in range(nbuf)]
    aq = bytearray(v & 255 for row in avals for v in row)
    ad = [random.uniform(0.01, 0.1) for _ in range(nbuf * blocks)]
    # host: per and splits as mmq_per (splits_want stands for the SM-based count)
    per = ((blocks + splits_want - 1) // splits_want + kc - 1) // kc * kc; per = max(per, kc)
    splits = (blocks + per - 1) // per
    grid = ((rows + kMMQRows - 1) // kMMQRows, splits, (n + 16*MT - 1) // (16*MT))
    out = {}; part = {}
    for bx in range(grid[0]):
        for by in range(grid[1]):
            for bz in range(grid[2]):
                rows0 = bx * kMMQRows; t0 = bz * S['tokens']
                first = min(blocks, by * per); end = min(blocks, first + per)
                chunks = (end - first + kc - 1) // kc
                acc = {}  # (warp, lane, mt, nt, e) -> float
                for c in range(chunks):
                    kb0 = first + c * kc; valid = min(kc, end - kb0)
                    st = bytearray(S['stage'])
                    for p in range(kMMQRows * 8):   # weights
                        row, prt = p // 8, p % 8; r = rows0 + row
                        if r < rows and prt * 16 < valid * bb:
                            src = r * blocks * bb + kb0 * bb + prt * 16
                            st[S['w_off'] + row*S['wpitch'] + prt*16: S['w_off'] + row*S['wpitch'] + prt*16 + 16] = wq[src:src+16]
                    wds = {}
                    for row in range(kMMQRows):     # weight scales (alignment as the device: (r*ds + kb0)*2 % (kc*2) == 0)
                        r = rows0 + row
                        assert ((r * ds + kb0) * 2) % (kc * 2) == 0 or r >= rows
                        for k in range(kc):
                            wds[row*kc + k] = wd[r*ds + kb0 + k] if (r < rows and k < valid) else 0.0
                    apieces = kc * 2
                    for p in range(S['tokens'] * apieces):  # activations
                        tok, prt = p // apieces, p % apieces; t = t0 + tok
                        if t < n and prt * 16 < valid * 32:
                            src = t * cols + kb0 * 32 + prt * 16
                            o = S['a_off'] + tok*S['apitch'] + prt*16
                            st[o:o+16] = aq[src:src+16]
                    ads = {}
                    for p in range(S['tokens'] * kc):
                        tok, k = p // kc, p % kc; t = t0 + tok
                        ads[tok*S['adpitch'] + k] = ad[t*blocks + kb0 + k] if (t < n and k < valid) else 0.0
                    # compute
                    for warp in range(kMMQWarps):
                        wrow = warp * kMMQRowTiles * 8
                        for kb in range(kc):
                            for nt in range(kMMQRowTiles):
                                B_regs = []
                                for lane in range(32):
                                    g, i4 = lane // 4, lane % 4
                                    p = S['w_off'] + (wrow + nt*8 + g) * S['wpitch'] + kb * bb
                                    if T == 8:
                                        b0, b1 = u32(st, p + i4*8), u32(st, p + i4*8 + 4)
                                    else:
                                        v = u32(st, p + i4*4)
                                        b0 = (((v & 0x0F0F0F0F) + 0x78787878) ^ 0x80808080) & 0xFFFFFFFF
                                        b1 = ((((v >> 4) & 0x0F0F0F0F) + 0x78787878) ^ 0x80808080) & 0xFFFFFFFF
                                    B_regs.append((b0, b1))
                                for mt in range(MT):
                                    A_regs = []; adq = []
                                    for lane in range(32):
                                        g, i4 = lane // 4, lane % 4; af = [0]*4; aq2 = [0, 0]
                                        for h in range(2):
                                            tok = mt*16 + g + 8*h
                                            p = S['a_off'] + tok*S['apitch'] + kb*32
                                            if T == 8: af[h], af[2+h] = u32(st, p + i4*8), u32(st, p + i4*8 + 4)
                                            else: af[h], af[2+h] = u32(st, p + i4*4), u32(st, p + 16 + i4*4)
                                            aq2[h] = ads[tok*S['adpitch'] + kb]
                                        A_regs.append(af); adq.append(aq2)
                                    D = mma(A_regs, B_regs)
                                    for lane in range(32):
                                        g, i4 = lane // 4, lane % 4; r = wrow + nt*8 + 2*i4
                                        wd0, wd1 = wds[r*kc + kb], wds[(r+1)*kc + kb]
                                        for e, sc in enumerate((wd0*adq[lane][0], wd1*adq[lane][0], wd0*adq[lane][1], wd1*adq[lane][1])):
                                            key = (warp, lane, mt, nt, e)
                                            acc[key] = acc.get(key, 0.0) + D[lane][e] * sc
                # stores
                for warp, lane, mt, nt, h, t, r in tile_outputs(rows0, t0, MT, rows, n):
                    v = (acc.get((warp, lane, mt, nt, 2*h), 0.0), acc.get((warp, lane, mt, nt, 2*h+1), 0.0))
                    if grid[1] == 1:
                        assert (t, r) not in out; out[(t, r)] = v
                    else:
                        assert (by, t, r) not in part; part[(by, t, r)] = v
    if grid[1] > 1:  # mmq_finish
        for t in range(n):
            for r in range(0, rows, 2):
                v0 = sum(part[(s, t, r)][0] for s in range(splits)); v1 = sum(part[(s, t, r)][1] for s in range(splits))
                out[(t, r)] = (v0, v1)
    worst = 0.0; missing = 0
    for t in range(n):
        for r in range(0, rows, 2):
            if (t, r) not in out: missing += 1; continue
            for j in range(2):
                want = sum(wvals[r+j][b*32+k] * avals[t][b*32+k] * wd[(r+j)*ds + b] * ad[t*blocks + b]
                           for b in range(blocks) for k in range(32))
                got = out[(t, r)][j]
                worst = max(worst, abs(got - want) / (abs(want) + 1e-3))
    print(f"T={T} rows={rows} cols={cols} n={n} MT={MT} per={per} splits={splits} grid={grid}: missing {missing}, worst rel err {worst:.2e}")
    return missing == 0 and worst < 1e-9

ok = True
ok &= run(2, 136, 32*13, 20, 2)
ok &= run(8, 136, 32*9, 9, 3)
ok &= run(2, 128, 32*8, 40, 1)
ok &= run(8, 8, 32*5, 64, 1)
ok &= run(2, 130, 32*3, 70, 5)   # two token groups, a partial row group, more slices wanted than blocks
ok &= run_f16(136, 32*5, 20, 2)
ok &= run_f16(128, 32*4, 64, 1)
ok &= run_f16(130, 32*3, 70, 16)  # two token groups, a partial row group, more slices wanted than blocks
ok &= run_f16(8, 32, 9, 1)        # a partial chunk (one block of two)
print("OK" if ok else "FAIL")
sys.exit(0 if ok else 1)
