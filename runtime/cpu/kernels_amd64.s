//go:build amd64 && !purego

#include "textflag.h"

// Constants (written out by a few lines of Python: each is a splat of one
// byte or a shuffle table).

// 0x0f, 0x80, 0x08, 0x03 and 0x20 in every byte
DATA nib<>+0(SB)/8, $0x0f0f0f0f0f0f0f0f
DATA nib<>+8(SB)/8, $0x0f0f0f0f0f0f0f0f
DATA nib<>+16(SB)/8, $0x0f0f0f0f0f0f0f0f
DATA nib<>+24(SB)/8, $0x0f0f0f0f0f0f0f0f
GLOBL nib<>(SB), RODATA|NOPTR, $32

DATA x80<>+0(SB)/8, $0x8080808080808080
DATA x80<>+8(SB)/8, $0x8080808080808080
DATA x80<>+16(SB)/8, $0x8080808080808080
DATA x80<>+24(SB)/8, $0x8080808080808080
GLOBL x80<>(SB), RODATA|NOPTR, $32

DATA eights<>+0(SB)/8, $0x0808080808080808
DATA eights<>+8(SB)/8, $0x0808080808080808
DATA eights<>+16(SB)/8, $0x0808080808080808
DATA eights<>+24(SB)/8, $0x0808080808080808
GLOBL eights<>(SB), RODATA|NOPTR, $32

DATA m3<>+0(SB)/8, $0x0303030303030303
DATA m3<>+8(SB)/8, $0x0303030303030303
DATA m3<>+16(SB)/8, $0x0303030303030303
DATA m3<>+24(SB)/8, $0x0303030303030303
GLOBL m3<>(SB), RODATA|NOPTR, $32

DATA m32<>+0(SB)/8, $0x2020202020202020
DATA m32<>+8(SB)/8, $0x2020202020202020
DATA m32<>+16(SB)/8, $0x2020202020202020
DATA m32<>+24(SB)/8, $0x2020202020202020
GLOBL m32<>(SB), RODATA|NOPTR, $32

// 16-bit ones, for VPMADDWD
DATA ones16<>+0(SB)/8, $0x0001000100010001
DATA ones16<>+8(SB)/8, $0x0001000100010001
DATA ones16<>+16(SB)/8, $0x0001000100010001
DATA ones16<>+24(SB)/8, $0x0001000100010001
GLOBL ones16<>(SB), RODATA|NOPTR, $32

// VPSRLVW counts: 0 for the low 128 bits, 4 for the high: spreads 16
// broadcast Q4_0 bytes into their low nibbles then their high nibbles.
DATA q4shift<>+0(SB)/8, $0x0000000000000000
DATA q4shift<>+8(SB)/8, $0x0000000000000000
DATA q4shift<>+16(SB)/8, $0x0004000400040004
DATA q4shift<>+24(SB)/8, $0x0004000400040004
GLOBL q4shift<>(SB), RODATA|NOPTR, $32

// k4shuf + 32i: VPSHUFB pattern copying 16-bit word i to every word of
// both lanes (ggml's get_scale_shuffle_k4(i)), for Q4_K's sub-block scales.
DATA k4shuf<>+0(SB)/8, $0x0100010001000100
DATA k4shuf<>+8(SB)/8, $0x0100010001000100
DATA k4shuf<>+16(SB)/8, $0x0100010001000100
DATA k4shuf<>+24(SB)/8, $0x0100010001000100
DATA k4shuf<>+32(SB)/8, $0x0302030203020302
DATA k4shuf<>+40(SB)/8, $0x0302030203020302
DATA k4shuf<>+48(SB)/8, $0x0302030203020302
DATA k4shuf<>+56(SB)/8, $0x0302030203020302
DATA k4shuf<>+64(SB)/8, $0x0504050405040504
DATA k4shuf<>+72(SB)/8, $0x0504050405040504
DATA k4shuf<>+80(SB)/8, $0x0504050405040504
DATA k4shuf<>+88(SB)/8, $0x0504050405040504
DATA k4shuf<>+96(SB)/8, $0x0706070607060706
DATA k4shuf<>+104(SB)/8, $0x0706070607060706
DATA k4shuf<>+112(SB)/8, $0x0706070607060706
DATA k4shuf<>+120(SB)/8, $0x0706070607060706
DATA k4shuf<>+128(SB)/8, $0x0908090809080908
DATA k4shuf<>+136(SB)/8, $0x0908090809080908
DATA k4shuf<>+144(SB)/8, $0x0908090809080908
DATA k4shuf<>+152(SB)/8, $0x0908090809080908
DATA k4shuf<>+160(SB)/8, $0x0b0a0b0a0b0a0b0a
DATA k4shuf<>+168(SB)/8, $0x0b0a0b0a0b0a0b0a
DATA k4shuf<>+176(SB)/8, $0x0b0a0b0a0b0a0b0a
DATA k4shuf<>+184(SB)/8, $0x0b0a0b0a0b0a0b0a
DATA k4shuf<>+192(SB)/8, $0x0d0c0d0c0d0c0d0c
DATA k4shuf<>+200(SB)/8, $0x0d0c0d0c0d0c0d0c
DATA k4shuf<>+208(SB)/8, $0x0d0c0d0c0d0c0d0c
DATA k4shuf<>+216(SB)/8, $0x0d0c0d0c0d0c0d0c
DATA k4shuf<>+224(SB)/8, $0x0f0e0f0e0f0e0f0e
DATA k4shuf<>+232(SB)/8, $0x0f0e0f0e0f0e0f0e
DATA k4shuf<>+240(SB)/8, $0x0f0e0f0e0f0e0f0e
DATA k4shuf<>+248(SB)/8, $0x0f0e0f0e0f0e0f0e
GLOBL k4shuf<>(SB), RODATA|NOPTR, $256

// k6shuf + 16i: VPSHUFB pattern giving byte 2i eight times then byte 2i+1
// eight times (ggml's get_scale_shuffle(i)), for Q6_K's group scales.
DATA k6shuf<>+0(SB)/8, $0x0000000000000000
DATA k6shuf<>+8(SB)/8, $0x0101010101010101
DATA k6shuf<>+16(SB)/8, $0x0202020202020202
DATA k6shuf<>+24(SB)/8, $0x0303030303030303
DATA k6shuf<>+32(SB)/8, $0x0404040404040404
DATA k6shuf<>+40(SB)/8, $0x0505050505050505
DATA k6shuf<>+48(SB)/8, $0x0606060606060606
DATA k6shuf<>+56(SB)/8, $0x0707070707070707
DATA k6shuf<>+64(SB)/8, $0x0808080808080808
DATA k6shuf<>+72(SB)/8, $0x0909090909090909
DATA k6shuf<>+80(SB)/8, $0x0a0a0a0a0a0a0a0a
DATA k6shuf<>+88(SB)/8, $0x0b0b0b0b0b0b0b0b
DATA k6shuf<>+96(SB)/8, $0x0c0c0c0c0c0c0c0c
DATA k6shuf<>+104(SB)/8, $0x0d0d0d0d0d0d0d0d
DATA k6shuf<>+112(SB)/8, $0x0e0e0e0e0e0e0e0e
DATA k6shuf<>+120(SB)/8, $0x0f0f0f0f0f0f0f0f
GLOBL k6shuf<>(SB), RODATA|NOPTR, $128


// Argument loading (defined before any TEXT so that go vet's asmdecl
// check, which does not expand macros, sees no FP reference outside a function).

#define Q8X4_ARGS \
	MOVQ w0+0(FP), R8; \
	MOVQ w1+8(FP), R9; \
	MOVQ w2+16(FP), R10; \
	MOVQ w3+24(FP), R11; \
	MOVQ a+32(FP), SI; \
	MOVQ stride+40(FP), DX; \
	MOVQ coff+48(FP), R12; \
	MOVQ doff+56(FP), R13; \
	MOVQ nb+64(FP), CX; \
	MOVQ out+72(FP), DI; \
	MOVQ wstep+80(FP), R14; \
	MOVQ ·f16Table(SB), BX; \
	VXORPS Y0, Y0, Y0; \
	VXORPS Y1, Y1, Y1; \
	VXORPS Y2, Y2, Y2; \
	VXORPS Y3, Y3, Y3

#define TILE_ARGS \
	MOVQ w0+0(FP), R8; \
	MOVQ w1+8(FP), R9; \
	MOVQ w2+16(FP), R10; \
	MOVQ w3+24(FP), R11; \
	MOVQ a+32(FP), SI; \
	MOVQ nb+40(FP), CX; \
	MOVQ out+48(FP), DI; \
	MOVQ wstep+56(FP), R12; \
	MOVQ ·f16Table(SB), BX; \
	VPXORD Y16, Y16, Y16; \
	VMOVDQA32 Y16, Y17; \
	VMOVDQA32 Y16, Y18; \
	VMOVDQA32 Y16, Y19; \
	VMOVDQA32 Y16, Y20; \
	VMOVDQA32 Y16, Y21; \
	VMOVDQA32 Y16, Y22; \
	VMOVDQA32 Y16, Y23; \
	VMOVDQA32 Y16, Y24; \
	VMOVDQA32 Y16, Y25; \
	VMOVDQA32 Y16, Y26; \
	VMOVDQA32 Y16, Y27; \
	VMOVDQA32 Y16, Y28; \
	VMOVDQA32 Y16, Y29; \
	VMOVDQA32 Y16, Y30; \
	VMOVDQA32 Y16, Y31

#define FX4_ARGS \
	MOVQ w0+0(FP), R8; \
	MOVQ w1+8(FP), R9; \
	MOVQ w2+16(FP), R10; \
	MOVQ w3+24(FP), R11; \
	MOVQ x+32(FP), SI; \
	MOVQ n+40(FP), CX; \
	MOVQ out+48(FP), DI; \
	VXORPS Y0, Y0, Y0; \
	VXORPS Y1, Y1, Y1; \
	VXORPS Y2, Y2, Y2; \
	VXORPS Y3, Y3, Y3; \
	VXORPS Y4, Y4, Y4; \
	VXORPS Y5, Y5, Y5; \
	VXORPS Y6, Y6, Y6; \
	VXORPS Y7, Y7, Y7

// FTILE_ARGS: the 4×4 float tile kernels' rows, tokens, column count and
// output (AX), and their accumulators cleared.
#define FTILE_ARGS \
	MOVQ w0+0(FP), R8; \
	MOVQ w1+8(FP), R9; \
	MOVQ w2+16(FP), R10; \
	MOVQ w3+24(FP), R11; \
	MOVQ x0+32(FP), SI; \
	MOVQ x1+40(FP), DI; \
	MOVQ x2+48(FP), R12; \
	MOVQ x3+56(FP), R13; \
	MOVQ n+64(FP), CX; \
	FTILE_ZERO; \
	MOVQ out+72(FP), AX

// PF is how far ahead of the 4 rows the mat-vec kernels prefetch: reading
// 4 rows at once, each advancing 18 or 34 bytes a step, is not a pattern
// the hardware prefetchers follow well from DRAM.
#define PF 1024

// ---------------------------------------------------------------------------
// Shared pieces.

// HSUM4 reduces the 8 lanes of each of Y0..Y3 and stores the four sums to
// (ptr): [ΣY0, ΣY1, ΣY2, ΣY3]. Clobbers Y0..Y3.
#define HSUM4(ptr) \
	VHADDPS Y1, Y0, Y0; \
	VHADDPS Y3, Y2, Y2; \
	VHADDPS Y2, Y0, Y0; \
	VEXTRACTF128 $1, Y0, X1; \
	VADDPS X1, X0, X0; \
	VMOVUPS X0, ptr

// SCALE loads the float32 value of the fp16 block scale at wp (through the
// f16Table pointer in BX) and multiplies it by the token's scale in dy.
#define SCALE(wp, dy, dst) \
	MOVWLZX wp, AX; \
	VBROADCASTSS (BX)(AX*4), dst; \
	VMULPS dy, dst, dst

// SCALEC is SCALE converting with F16C instead of the table: two more
// micro-ops, but no table lookups competing with the weights streaming
// from DRAM for the L2 cache (the mat-vec kernels read a scale every 18
// or 34 bytes).
#define SCALEC(wp, dy, dst) \
	VPBROADCASTW wp, X8; \
	VCVTPH2PS X8, dst; \
	VMULPS dy, dst, dst

// func cpuid1ECX() uint32
TEXT ·cpuid1ECX(SB), NOSPLIT, $0-4
	MOVL $1, AX
	XORL CX, CX
	CPUID
	MOVL CX, ret+0(FP)
	RET

// ---------------------------------------------------------------------------
// Q4_0 and Q8_0 weights × one token: 4 rows per pass, so each activation
// block is loaded once for four rows. Arguments (all kernels of this shape):
// the 4 row pointers, a = the token's block-0 qs, the activation block
// stride and the offsets of corr and d from qs, the block count, and out.
// Per block and row: integer dot of 32 pairs → float → × d_w·d_a → sum.


// AVX2 Q4_0 row: q = nibbles (0..15); VPMADDUBSW(q, a) − VPMADDUBSW(8, a)
// (Y13, computed once per block) is Σ(q−8)·a in 16-bit pairs, exactly
// (|pair| ≤ 2·15·127); VPMADDWD by ones widens to 8 int32 lanes.
#define Q40ROW_AVX2(wp, acc) \
	VMOVDQU 2(wp), X6; \
	VPSRLW $4, X6, X7; \
	VINSERTI128 $1, X7, Y6, Y6; \
	VPAND Y15, Y6, Y6; \
	VPMADDUBSW Y4, Y6, Y6; \
	VPSUBW Y13, Y6, Y6; \
	VPMADDWD Y12, Y6, Y6; \
	VCVTDQ2PS Y6, Y6; \
	SCALE((wp), Y5, Y8); \
	VFMADD231PS Y8, Y6, acc

// func q40x4AVX2(w0, w1, w2, w3, a *byte, stride, coff, doff, nb int, out *[4]float32, wstep int)
TEXT ·q40x4AVX2(SB), NOSPLIT, $0-88
	Q8X4_ARGS
	VMOVDQU nib<>(SB), Y15
	VMOVDQU eights<>(SB), Y14
	VMOVDQU ones16<>(SB), Y12

q40avx2loop:
	PREFETCHT0 PF(R8)
	PREFETCHT0 PF(R9)
	PREFETCHT0 PF(R10)
	PREFETCHT0 PF(R11)
	VMOVDQU (SI), Y4
	VBROADCASTSS (SI)(R13*1), Y5
	VPMADDUBSW Y4, Y14, Y13
	Q40ROW_AVX2(R8, Y0)
	Q40ROW_AVX2(R9, Y1)
	Q40ROW_AVX2(R10, Y2)
	Q40ROW_AVX2(R11, Y3)
	ADDQ R14, R8
	ADDQ R14, R9
	ADDQ R14, R10
	ADDQ R14, R11
	ADDQ DX, SI
	DECQ CX
	JNZ  q40avx2loop

	HSUM4((DI))
	VZEROUPPER
	RET

// AVX2 Q8_0 row: VPMADDUBSW(|w|, a·sign(w)) = Σ w·a in 16-bit pairs,
// exactly: |w| ≤ 128 and |a| ≤ 127 keep a pair within ±32512.
#define Q80ROW_AVX2(wp, acc) \
	VMOVDQU 2(wp), Y6; \
	VPSIGNB Y6, Y4, Y7; \
	VPABSB Y6, Y6; \
	VPMADDUBSW Y7, Y6, Y6; \
	VPMADDWD Y12, Y6, Y6; \
	VCVTDQ2PS Y6, Y6; \
	SCALE((wp), Y5, Y8); \
	VFMADD231PS Y8, Y6, acc

// func q80x4AVX2(w0, w1, w2, w3, a *byte, stride, coff, doff, nb int, out *[4]float32, wstep int)
TEXT ·q80x4AVX2(SB), NOSPLIT, $0-88
	Q8X4_ARGS
	VMOVDQU ones16<>(SB), Y12

q80avx2loop:
	PREFETCHT0 PF(R8)
	PREFETCHT0 PF(R9)
	PREFETCHT0 PF(R10)
	PREFETCHT0 PF(R11)
	VMOVDQU (SI), Y4
	VBROADCASTSS (SI)(R13*1), Y5
	Q80ROW_AVX2(R8, Y0)
	Q80ROW_AVX2(R9, Y1)
	Q80ROW_AVX2(R10, Y2)
	Q80ROW_AVX2(R11, Y3)
	ADDQ R14, R8
	ADDQ R14, R9
	ADDQ R14, R10
	ADDQ R14, R11
	ADDQ DX, SI
	DECQ CX
	JNZ  q80avx2loop

	HSUM4((DI))
	VZEROUPPER
	RET

// VNNI Q4_0 row: the 16 quant bytes broadcast to both lanes, shifted by 0
// (low lane) or 4 (high lane) and masked give the 32 nibbles q = x+8 in
// element order; VPDPBUSD(q, a) starting from corr = −8·Σa gives Σx·a.
#define Q40ROW_VNNI(wp, acc) \
	VBROADCASTI128 2(wp), Y6; \
	VPSRLVW Y14, Y6, Y6; \
	VPAND Y15, Y6, Y6; \
	VMOVDQA Y13, Y7; \
	VPDPBUSD Y4, Y6, Y7; \
	VCVTDQ2PS Y7, Y7; \
	SCALEC((wp), Y5, Y8); \
	VFMADD231PS Y8, Y7, acc

// func q40x4VNNI(w0, w1, w2, w3, a *byte, stride, coff, doff, nb int, out *[4]float32, wstep int)
TEXT ·q40x4VNNI(SB), NOSPLIT, $0-88
	Q8X4_ARGS
	VMOVDQU nib<>(SB), Y15
	VMOVDQU q4shift<>(SB), Y14

q40vnniloop:
	PREFETCHT0 PF(R8)
	PREFETCHT0 PF(R9)
	PREFETCHT0 PF(R10)
	PREFETCHT0 PF(R11)
	VMOVDQU (SI), Y4
	VBROADCASTSS (SI)(R13*1), Y5
	VMOVDQU (SI)(R12*1), Y13
	Q40ROW_VNNI(R8, Y0)
	Q40ROW_VNNI(R9, Y1)
	Q40ROW_VNNI(R10, Y2)
	Q40ROW_VNNI(R11, Y3)
	ADDQ R14, R8
	ADDQ R14, R9
	ADDQ R14, R10
	ADDQ R14, R11
	ADDQ DX, SI
	DECQ CX
	JNZ  q40vnniloop

	HSUM4((DI))
	VZEROUPPER
	RET

// VNNI Q8_0 row: w XOR 0x80 = w+128 as an unsigned byte; corr = −128·Σa.
#define Q80ROW_VNNI(wp, acc) \
	VPXOR 2(wp), Y15, Y6; \
	VMOVDQA Y13, Y7; \
	VPDPBUSD Y4, Y6, Y7; \
	VCVTDQ2PS Y7, Y7; \
	SCALEC((wp), Y5, Y8); \
	VFMADD231PS Y8, Y7, acc

// func q80x4VNNI(w0, w1, w2, w3, a *byte, stride, coff, doff, nb int, out *[4]float32, wstep int)
TEXT ·q80x4VNNI(SB), NOSPLIT, $0-88
	Q8X4_ARGS
	VMOVDQU x80<>(SB), Y15

q80vnniloop:
	PREFETCHT0 PF(R8)
	PREFETCHT0 PF(R9)
	PREFETCHT0 PF(R10)
	PREFETCHT0 PF(R11)
	VMOVDQU (SI), Y4
	VBROADCASTSS (SI)(R13*1), Y5
	VMOVDQU (SI)(R12*1), Y13
	Q80ROW_VNNI(R8, Y0)
	Q80ROW_VNNI(R9, Y1)
	Q80ROW_VNNI(R10, Y2)
	Q80ROW_VNNI(R11, Y3)
	ADDQ R14, R8
	ADDQ R14, R9
	ADDQ R14, R10
	ADDQ R14, R11
	ADDQ DX, SI
	DECQ CX
	JNZ  q80vnniloop

	HSUM4((DI))
	VZEROUPPER
	RET

// ---------------------------------------------------------------------------
// Q4_0 and Q8_0 weights × a group of 4 tokens (activation layout g = 4:
// per block 288 bytes, token t's qs at 32t, corr at 128+32t, d at 256+4t).
// Each block of the 4 rows is decoded once (Y0..Y3, scales Y4..Y7) and used
// for the 4 tokens; the 16 accumulators live in Y16..Y31, token-major:
// Y(16+4t+r).

// TILE_MAC: one row × token product of a block into its accumulator.
#define TILE_MAC(t, wq, ws, tmp, tmps, acc) \
	VMOVDQU (128+32*t)(SI), tmp; \
	VPDPBUSD Y8, wq, tmp; \
	VCVTDQ2PS tmp, tmp; \
	VMULPS Y9, ws, tmps; \
	VFMADD231PS tmps, tmp, acc

#define TILE_TOKEN(t, a0, a1, a2, a3) \
	VMOVDQU (32*t)(SI), Y8; \
	VBROADCASTSS (256+4*t)(SI), Y9; \
	TILE_MAC(t, Y0, Y4, Y10, Y11, a0); \
	TILE_MAC(t, Y1, Y5, Y12, Y13, a1); \
	TILE_MAC(t, Y2, Y6, Y10, Y11, a2); \
	TILE_MAC(t, Y3, Y7, Y12, Y13, a3)


#define TILE_BODY \
	MOVWLZX (R8), AX; \
	VBROADCASTSS (BX)(AX*4), Y4; \
	MOVWLZX (R9), AX; \
	VBROADCASTSS (BX)(AX*4), Y5; \
	MOVWLZX (R10), AX; \
	VBROADCASTSS (BX)(AX*4), Y6; \
	MOVWLZX (R11), AX; \
	VBROADCASTSS (BX)(AX*4), Y7; \
	TILE_TOKEN(0, Y16, Y17, Y18, Y19); \
	TILE_TOKEN(1, Y20, Y21, Y22, Y23); \
	TILE_TOKEN(2, Y24, Y25, Y26, Y27); \
	TILE_TOKEN(3, Y28, Y29, Y30, Y31)

#define TILE_STORE_TOKEN(a0, a1, a2, a3, off) \
	VMOVAPS a0, Y0; \
	VMOVAPS a1, Y1; \
	VMOVAPS a2, Y2; \
	VMOVAPS a3, Y3; \
	HSUM4(off(DI))

#define TILE_STORE \
	TILE_STORE_TOKEN(Y16, Y17, Y18, Y19, 0); \
	TILE_STORE_TOKEN(Y20, Y21, Y22, Y23, 16); \
	TILE_STORE_TOKEN(Y24, Y25, Y26, Y27, 32); \
	TILE_STORE_TOKEN(Y28, Y29, Y30, Y31, 48)

// func q40x4x4VNNI(w0, w1, w2, w3, a *byte, nb int, out *[16]float32, wstep int)
TEXT ·q40x4x4VNNI(SB), NOSPLIT, $0-64
	TILE_ARGS
	VMOVDQU nib<>(SB), Y15
	VMOVDQU q4shift<>(SB), Y14

q40tileloop:
	VBROADCASTI128 2(R8), Y0
	VBROADCASTI128 2(R9), Y1
	VBROADCASTI128 2(R10), Y2
	VBROADCASTI128 2(R11), Y3
	VPSRLVW Y14, Y0, Y0
	VPSRLVW Y14, Y1, Y1
	VPSRLVW Y14, Y2, Y2
	VPSRLVW Y14, Y3, Y3
	VPAND Y15, Y0, Y0
	VPAND Y15, Y1, Y1
	VPAND Y15, Y2, Y2
	VPAND Y15, Y3, Y3
	TILE_BODY
	ADDQ R12, R8
	ADDQ R12, R9
	ADDQ R12, R10
	ADDQ R12, R11
	ADDQ $288, SI
	DECQ CX
	JNZ  q40tileloop

	TILE_STORE
	VZEROUPPER
	RET

// func q80x4x4VNNI(w0, w1, w2, w3, a *byte, nb int, out *[16]float32, wstep int)
TEXT ·q80x4x4VNNI(SB), NOSPLIT, $0-64
	TILE_ARGS
	VMOVDQU x80<>(SB), Y15

q80tileloop:
	VPXOR 2(R8), Y15, Y0
	VPXOR 2(R9), Y15, Y1
	VPXOR 2(R10), Y15, Y2
	VPXOR 2(R11), Y15, Y3
	TILE_BODY
	ADDQ R12, R8
	ADDQ R12, R9
	ADDQ R12, R10
	ADDQ R12, R11
	ADDQ $288, SI
	DECQ CX
	JNZ  q80tileloop

	TILE_STORE
	VZEROUPPER
	RET

// ---------------------------------------------------------------------------
// K-quants × one Q8_K token (per 256-column block 320 bytes: qs at 0,
// bsums at 256, d at 288), one row, after ggml's AVX2 kernels.

// func q4KDotAVX2(w, a *byte, nb int) float32
TEXT ·q4KDotAVX2(SB), NOSPLIT, $0-28
	MOVQ w+0(FP), R8
	MOVQ a+8(FP), SI
	MOVQ nb+16(FP), CX
	MOVQ ·f16Table(SB), BX
	VMOVDQU nib<>(SB), Y15
	VXORPS Y0, Y0, Y0 // Σ d·dy·Σ sc·(q·a)
	VXORPS Y1, Y1, Y1 // Σ dmin·dy·Σ m·Σa

q4kloop:
	// Unpack the 12 bytes of 6-bit scales and mins (ggml's utmp shuffle):
	// AX = sc0..3, DX = sc4..7, R11 = m0..3, R10 = m4..7.
	MOVL 4(R8), AX
	MOVL 8(R8), DX
	MOVL 12(R8), R9
	MOVL R9, R10
	SHRL $4, R10
	ANDL $0x0f0f0f0f, R10
	MOVL DX, R11
	SHRL $6, R11
	ANDL $0x03030303, R11
	SHLL $4, R11
	ORL  R11, R10
	MOVL DX, R11
	ANDL $0x3f3f3f3f, R11
	MOVL R9, DX
	ANDL $0x0f0f0f0f, DX
	MOVL AX, R12
	SHRL $6, R12
	ANDL $0x03030303, R12
	SHLL $4, R12
	ORL  R12, DX
	ANDL $0x3f3f3f3f, AX
	SHLQ $32, DX
	ORQ  DX, AX
	SHLQ $32, R10
	ORQ  R10, R11
	VMOVQ AX, X2
	VPINSRQ $1, R11, X2, X2
	VPMOVZXBW X2, Y2 // words: sc0..7 | m0..7

	// Minimums: Σ_j m_j·(bsums[2j]+bsums[2j+1]), times dmin·dy.
	VEXTRACTI128 $1, Y2, X3
	VMOVDQU 256(SI), Y4
	VEXTRACTI128 $1, Y4, X5
	VPHADDW X5, X4, X4
	VPMADDWD X4, X3, X3
	VCVTDQ2PS X3, X3
	MOVWLZX 2(R8), AX
	VMOVSS (BX)(AX*4), X6
	VMULSS 288(SI), X6, X6
	VBROADCASTSS X6, X6
	VFMADD231PS X6, X3, X1

	// Scales in both lanes; per 64 columns: low nibbles (sub-block 2j)
	// and high nibbles (2j+1), VPMADDUBSW with a, VPMADDWD by the scale.
	VPERMQ $0x44, Y2, Y2
	VPXOR Y3, Y3, Y3

#define Q4K_CHUNK(j) \
	VMOVDQU (16+32*j)(R8), Y6; \
	VPSRLW $4, Y6, Y7; \
	VPAND Y15, Y6, Y6; \
	VPAND Y15, Y7, Y7; \
	VPMADDUBSW (64*j)(SI), Y6, Y6; \
	VPMADDUBSW (64*j+32)(SI), Y7, Y7; \
	VPSHUFB k4shuf<>+(64*j)(SB), Y2, Y8; \
	VPSHUFB k4shuf<>+(64*j+32)(SB), Y2, Y9; \
	VPMADDWD Y8, Y6, Y6; \
	VPMADDWD Y9, Y7, Y7; \
	VPADDD Y6, Y3, Y3; \
	VPADDD Y7, Y3, Y3

	Q4K_CHUNK(0)
	Q4K_CHUNK(1)
	Q4K_CHUNK(2)
	Q4K_CHUNK(3)

	MOVWLZX (R8), AX
	VMOVSS (BX)(AX*4), X6
	VMULSS 288(SI), X6, X6
	VBROADCASTSS X6, Y6
	VCVTDQ2PS Y3, Y3
	VFMADD231PS Y6, Y3, Y0

	ADDQ $144, R8
	ADDQ $320, SI
	DECQ CX
	JNZ  q4kloop

	VEXTRACTF128 $1, Y0, X2
	VADDPS X2, X0, X0
	VSUBPS X1, X0, X0
	VHADDPS X0, X0, X0
	VHADDPS X0, X0, X0
	VZEROUPPER
	MOVSS X0, ret+24(FP)
	RET

// func q6KDotAVX2(w, a *byte, nb int) float32
TEXT ·q6KDotAVX2(SB), NOSPLIT, $0-28
	MOVQ w+0(FP), R8
	MOVQ a+8(FP), SI
	MOVQ nb+16(FP), CX
	MOVQ ·f16Table(SB), BX
	VMOVDQU nib<>(SB), Y15
	VMOVDQU m3<>(SB), Y14
	VMOVDQU m32<>(SB), Y13
	VXORPS Y8, Y8, Y8 // Σ d·dy·Σ sc·((q−32)·a)

// Q6K_PROD: 32 quants q (0..63) in their 16-column groups is, is+1:
// VPMADDUBSW(q, a) − VPMADDUBSW(32, a) = Σ(q−32)·a in 16-bit pairs,
// exactly (|pair| ≤ 2·63·127), then VPMADDWD by the sign-extended scales.
#define Q6K_PROD(q, aoff, is) \
	VMOVDQU aoff(SI), Y9; \
	VPMADDUBSW Y9, q, q; \
	VPMADDUBSW Y9, Y13, Y10; \
	VPSUBW Y10, q, q; \
	VPSHUFB k6shuf<>+(16*is)(SB), X12, X7; \
	VPMOVSXBW X7, Y7; \
	VPMADDWD Y7, q, q; \
	VPADDD q, Y11, Y11

// Q6K_HALF: 128 columns from 64 ql bytes (low nibbles: columns 0..63,
// high: 64..127) and 32 qh bytes (2 bits per column, 4 columns apart).
#define Q6K_HALF(h) \
	VMOVDQU (64*h)(R8), Y0; \
	VMOVDQU (64*h+32)(R8), Y1; \
	VMOVDQU (128+32*h)(R8), Y2; \
	VPAND Y14, Y2, Y3; \
	VPSLLW $4, Y3, Y3; \
	VPSRLW $2, Y2, Y4; \
	VPAND Y14, Y4, Y4; \
	VPSLLW $4, Y4, Y4; \
	VPSRLW $4, Y2, Y5; \
	VPAND Y14, Y5, Y5; \
	VPSLLW $4, Y5, Y5; \
	VPSRLW $6, Y2, Y6; \
	VPAND Y14, Y6, Y6; \
	VPSLLW $4, Y6, Y6; \
	VPAND Y15, Y0, Y7; \
	VPOR Y7, Y3, Y3; \
	VPAND Y15, Y1, Y7; \
	VPOR Y7, Y4, Y4; \
	VPSRLW $4, Y0, Y7; \
	VPAND Y15, Y7, Y7; \
	VPOR Y7, Y5, Y5; \
	VPSRLW $4, Y1, Y7; \
	VPAND Y15, Y7, Y7; \
	VPOR Y7, Y6, Y6; \
	Q6K_PROD(Y3, (128*h), (4*h)); \
	Q6K_PROD(Y4, (128*h+32), (4*h+1)); \
	Q6K_PROD(Y5, (128*h+64), (4*h+2)); \
	Q6K_PROD(Y6, (128*h+96), (4*h+3))

q6kloop:
	VMOVDQU 192(R8), X12
	VPXOR Y11, Y11, Y11
	Q6K_HALF(0)
	Q6K_HALF(1)
	MOVWLZX 208(R8), AX
	VMOVSS (BX)(AX*4), X9
	VMULSS 288(SI), X9, X9
	VBROADCASTSS X9, Y9
	VCVTDQ2PS Y11, Y11
	VFMADD231PS Y9, Y11, Y8

	ADDQ $210, R8
	ADDQ $320, SI
	DECQ CX
	JNZ  q6kloop

	VEXTRACTF128 $1, Y8, X0
	VADDPS X8, X0, X0
	VHADDPS X0, X0, X0
	VHADDPS X0, X0, X0
	VZEROUPPER
	MOVSS X0, ret+24(FP)
	RET

// ---------------------------------------------------------------------------
// Float weights × one float32 token, 4 rows, 16 columns per pass (n is a
// multiple of 16 and > 0): two accumulators per row hide the FMA latency.


#define FX4_END \
	VADDPS Y4, Y0, Y0; \
	VADDPS Y5, Y1, Y1; \
	VADDPS Y6, Y2, Y2; \
	VADDPS Y7, Y3, Y3; \
	HSUM4((DI)); \
	VZEROUPPER

// func f32x4AVX2(w0, w1, w2, w3 *byte, x *float32, n int, out *[4]float32)
TEXT ·f32x4AVX2(SB), NOSPLIT, $0-56
	FX4_ARGS

f32loop:
	VMOVUPS (SI), Y8
	VMOVUPS 32(SI), Y9
	VFMADD231PS (R8), Y8, Y0
	VFMADD231PS 32(R8), Y9, Y4
	VFMADD231PS (R9), Y8, Y1
	VFMADD231PS 32(R9), Y9, Y5
	VFMADD231PS (R10), Y8, Y2
	VFMADD231PS 32(R10), Y9, Y6
	VFMADD231PS (R11), Y8, Y3
	VFMADD231PS 32(R11), Y9, Y7
	ADDQ $64, R8
	ADDQ $64, R9
	ADDQ $64, R10
	ADDQ $64, R11
	ADDQ $64, SI
	SUBQ $16, CX
	JNZ  f32loop

	FX4_END
	RET

#define F16ROW(wp, acc0, acc1) \
	VCVTPH2PS (wp), Y10; \
	VCVTPH2PS 16(wp), Y11; \
	VFMADD231PS Y10, Y8, acc0; \
	VFMADD231PS Y11, Y9, acc1

// func f16x4AVX2(w0, w1, w2, w3 *byte, x *float32, n int, out *[4]float32)
TEXT ·f16x4AVX2(SB), NOSPLIT, $0-56
	FX4_ARGS

f16loop:
	VMOVUPS (SI), Y8
	VMOVUPS 32(SI), Y9
	F16ROW(R8, Y0, Y4)
	F16ROW(R9, Y1, Y5)
	F16ROW(R10, Y2, Y6)
	F16ROW(R11, Y3, Y7)
	ADDQ $32, R8
	ADDQ $32, R9
	ADDQ $32, R10
	ADDQ $32, R11
	ADDQ $64, SI
	SUBQ $16, CX
	JNZ  f16loop

	FX4_END
	RET

// BF16 is the top half of a float32: zero-extend to 32 bits, shift up.
#define BF16ROW(wp, acc0, acc1) \
	VPMOVZXWD (wp), Y10; \
	VPMOVZXWD 16(wp), Y11; \
	VPSLLD $16, Y10, Y10; \
	VPSLLD $16, Y11, Y11; \
	VFMADD231PS Y10, Y8, acc0; \
	VFMADD231PS Y11, Y9, acc1

// func bf16x4AVX2(w0, w1, w2, w3 *byte, x *float32, n int, out *[4]float32)
TEXT ·bf16x4AVX2(SB), NOSPLIT, $0-56
	FX4_ARGS

bf16loop:
	VMOVUPS (SI), Y8
	VMOVUPS 32(SI), Y9
	BF16ROW(R8, Y0, Y4)
	BF16ROW(R9, Y1, Y5)
	BF16ROW(R10, Y2, Y6)
	BF16ROW(R11, Y3, Y7)
	ADDQ $32, R8
	ADDQ $32, R9
	ADDQ $32, R10
	ADDQ $32, R11
	ADDQ $64, SI
	SUBQ $16, CX
	JNZ  bf16loop

	FX4_END
	RET

// func axpyF32AVX2(dst, x *float32, a float32, n int) (n a multiple of 16, > 0)
TEXT ·axpyF32AVX2(SB), NOSPLIT, $0-32
	MOVQ dst+0(FP), DI
	MOVQ x+8(FP), SI
	VBROADCASTSS a+16(FP), Y0
	MOVQ n+24(FP), CX

axpyloop:
	VMOVUPS (SI), Y1
	VMOVUPS 32(SI), Y2
	VFMADD213PS (DI), Y0, Y1
	VFMADD213PS 32(DI), Y0, Y2
	VMOVUPS Y1, (DI)
	VMOVUPS Y2, 32(DI)
	ADDQ $64, SI
	ADDQ $64, DI
	SUBQ $16, CX
	JNZ  axpyloop

	VZEROUPPER
	RET

// ---------------------------------------------------------------------------
// The same 4 rows × 4 tokens with 512-bit registers: 64 columns (two
// blocks) per step, activations in the pair layout (act.go: per pair of
// blocks 768 bytes, token t's 64 qs at 64t, its 16 corr at 256+64t, its 16
// scales at 512+64t). Where 512-bit operations run at the 256-bit rate
// (Zen 5, recent Intel) this doubles the work per instruction. The low and
// high 256 bits of a weight register hold the two blocks; K1 = 0xff00
// selects the high half when loading the second block's scale.

// ZTILE_MAC: one row × one token, the token's qs in Z8, its corrections
// in Z9 and scales in Z12 (loaded once per token for the four rows).
#define ZTILE_MAC(wq, ws, acc) \
	VMOVDQA32 Z9, Z10; \
	VPDPBUSD Z8, wq, Z10; \
	VCVTDQ2PS Z10, Z10; \
	VMULPS Z12, ws, Z11; \
	VFMADD231PS Z11, Z10, acc

#define ZTILE_TOKEN(t, a0, a1, a2, a3) \
	VMOVDQU64 (64*t)(SI), Z8; \
	VMOVDQU64 (256+64*t)(SI), Z9; \
	VMOVUPS (512+64*t)(SI), Z12; \
	ZTILE_MAC(Z0, Z4, a0); \
	ZTILE_MAC(Z1, Z5, a1); \
	ZTILE_MAC(Z2, Z6, a2); \
	ZTILE_MAC(Z3, Z7, a3)

// ZSCALES: the two blocks' fp16 scales of a row at wp and wp+bs, as floats
// in the low and high halves of dst.
#define ZSCALES(wp, dst) \
	MOVWLZX (wp), AX; \
	VBROADCASTSS (BX)(AX*4), dst; \
	MOVWLZX (wp)(R12*1), AX; \
	VBROADCASTSS (BX)(AX*4), K1, dst

#define ZTILE_BODY \
	ZSCALES(R8, Z4); \
	ZSCALES(R9, Z5); \
	ZSCALES(R10, Z6); \
	ZSCALES(R11, Z7); \
	ZTILE_TOKEN(0, Z16, Z17, Z18, Z19); \
	ZTILE_TOKEN(1, Z20, Z21, Z22, Z23); \
	ZTILE_TOKEN(2, Z24, Z25, Z26, Z27); \
	ZTILE_TOKEN(3, Z28, Z29, Z30, Z31)

#define ZFOLD(z, y, dst) \
	VEXTRACTF64X4 $1, z, dst; \
	VADDPS y, dst, dst

#define ZTILE_STORE_TOKEN(z0, z1, z2, z3, y0, y1, y2, y3, off) \
	ZFOLD(z0, y0, Y0); \
	ZFOLD(z1, y1, Y1); \
	ZFOLD(z2, y2, Y2); \
	ZFOLD(z3, y3, Y3); \
	HSUM4(off(DI))

#define ZTILE_STORE \
	ZTILE_STORE_TOKEN(Z16, Z17, Z18, Z19, Y16, Y17, Y18, Y19, 0); \
	ZTILE_STORE_TOKEN(Z20, Z21, Z22, Z23, Y20, Y21, Y22, Y23, 16); \
	ZTILE_STORE_TOKEN(Z24, Z25, Z26, Z27, Y24, Y25, Y26, Y27, 32); \
	ZTILE_STORE_TOKEN(Z28, Z29, Z30, Z31, Y28, Y29, Y30, Y31, 48)

// ZQ40ROW: 2×16 quant bytes as [q0, q0, q1, q1] in 128-bit lanes, shifted
// by 0 or 4 per lane and masked: the two blocks' 64 nibbles in order.
#define ZQ40ROW(wp, dst) \
	VBROADCASTI32X4 2(wp), dst; \
	VBROADCASTI32X4 2(wp)(R12*1), K1, dst; \
	VPSRLVW Z14, dst, dst; \
	VPANDD Z15, dst, dst

// func q40x4x4Z(w0, w1, w2, w3, a *byte, nb int, out *[16]float32, wstep int) (nb even)
TEXT ·q40x4x4Z(SB), NOSPLIT, $0-64
	TILE_ARGS
	SHRQ $1, CX
	LEAQ (R12)(R12*1), R13
	MOVL $0xff00, AX
	KMOVW AX, K1
	MOVL $0x0f, AX
	VPBROADCASTB AX, Z15
	VBROADCASTI64X4 q4shift<>(SB), Z14

q40zloop:
	ZQ40ROW(R8, Z0)
	ZQ40ROW(R9, Z1)
	ZQ40ROW(R10, Z2)
	ZQ40ROW(R11, Z3)
	ZTILE_BODY
	ADDQ R13, R8
	ADDQ R13, R9
	ADDQ R13, R10
	ADDQ R13, R11
	ADDQ $768, SI
	DECQ CX
	JNZ  q40zloop

	ZTILE_STORE
	VZEROUPPER
	RET

// ZQ80ROW: the two blocks' 2×32 quants, XOR 0x80 (= +128, unsigned).
#define ZQ80ROW(wp, dst) \
	VMOVDQU 2(wp), Y9; \
	VINSERTI64X4 $1, 2(wp)(R12*1), Z9, Z9; \
	VPXORD Z15, Z9, dst

// func q80x4x4Z(w0, w1, w2, w3, a *byte, nb int, out *[16]float32, wstep int) (nb even)
TEXT ·q80x4x4Z(SB), NOSPLIT, $0-64
	TILE_ARGS
	SHRQ $1, CX
	LEAQ (R12)(R12*1), R13
	MOVL $0xff00, AX
	KMOVW AX, K1
	MOVL $0x80, AX
	VPBROADCASTB AX, Z15

q80zloop:
	ZQ80ROW(R8, Z0)
	ZQ80ROW(R9, Z1)
	ZQ80ROW(R10, Z2)
	ZQ80ROW(R11, Z3)
	ZTILE_BODY
	ADDQ R13, R8
	ADDQ R13, R9
	ADDQ R13, R10
	ADDQ R13, R11
	ADDQ $768, SI
	DECQ CX
	JNZ  q80zloop

	ZTILE_STORE
	VZEROUPPER
	RET

// DOTSUM: the sum of the 32 floats of Y0..Y3 in X0's low lane, the
// reduction every 4-accumulator dot product ends with.
#define DOTSUM \
	VADDPS Y1, Y0, Y0; \
	VADDPS Y3, Y2, Y2; \
	VADDPS Y2, Y0, Y0; \
	VEXTRACTF128 $1, Y0, X1; \
	VADDPS X1, X0, X0; \
	VHADDPS X0, X0, X0; \
	VHADDPS X0, X0, X0

// func dotRowsF32AVX2(q, rows *float32, stride, n, hd int, out *float32)
// out[t] = q · rows[t*stride : t*stride+hd] for t < n (hd a multiple of 32,
// > 0; stride in floats): one 4-accumulator dot product per row (DotF32 is
// the case n = 1), with no call per row: attention's scores.
TEXT ·dotRowsF32AVX2(SB), NOSPLIT, $0-48
	MOVQ q+0(FP), SI
	MOVQ rows+8(FP), DI
	MOVQ stride+16(FP), R8
	SHLQ $2, R8
	MOVQ n+24(FP), DX
	MOVQ hd+32(FP), R9
	MOVQ out+40(FP), R10

drowloop:
	MOVQ SI, R11
	MOVQ DI, R12
	MOVQ R9, CX
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3

drowdot:
	VMOVUPS (R11), Y4
	VMOVUPS 32(R11), Y5
	VMOVUPS 64(R11), Y6
	VMOVUPS 96(R11), Y7
	VFMADD231PS (R12), Y4, Y0
	VFMADD231PS 32(R12), Y5, Y1
	VFMADD231PS 64(R12), Y6, Y2
	VFMADD231PS 96(R12), Y7, Y3
	ADDQ $128, R11
	ADDQ $128, R12
	SUBQ $32, CX
	JNZ  drowdot

	DOTSUM
	MOVSS X0, (R10)
	ADDQ $4, R10
	ADDQ R8, DI
	DECQ DX
	JNZ  drowloop

	VZEROUPPER
	RET

// func axpyRowsF32AVX2(dst, w, rows *float32, stride, n, hd int)
// dst += Σ_t w[t]·rows[t*stride : t*stride+hd] for t < n, in order of t
// (hd a multiple of 32, > 0; n > 0): the same fused multiply-adds as n
// axpyF32AVX2 calls, with 32 floats of dst kept in registers across the
// rows. Attention's weighted sum of the values.
TEXT ·axpyRowsF32AVX2(SB), NOSPLIT, $0-48
	MOVQ dst+0(FP), DI
	MOVQ w+8(FP), SI
	MOVQ rows+16(FP), R8
	MOVQ stride+24(FP), R9
	SHLQ $2, R9
	MOVQ n+32(FP), R10
	MOVQ hd+40(FP), CX

arowchunk:
	VMOVUPS (DI), Y1
	VMOVUPS 32(DI), Y2
	VMOVUPS 64(DI), Y3
	VMOVUPS 96(DI), Y4
	MOVQ SI, R11
	MOVQ R8, R12
	MOVQ R10, DX

arowrow:
	VBROADCASTSS (R11), Y0
	VFMADD231PS (R12), Y0, Y1
	VFMADD231PS 32(R12), Y0, Y2
	VFMADD231PS 64(R12), Y0, Y3
	VFMADD231PS 96(R12), Y0, Y4
	ADDQ $4, R11
	ADDQ R9, R12
	DECQ DX
	JNZ  arowrow

	VMOVUPS Y1, (DI)
	VMOVUPS Y2, 32(DI)
	VMOVUPS Y3, 64(DI)
	VMOVUPS Y4, 96(DI)
	ADDQ $128, DI
	ADDQ $128, R8
	SUBQ $32, CX
	JNZ  arowchunk

	VZEROUPPER
	RET

// ---------------------------------------------------------------------------
// e^x of float32s, computed in float64 so that the float32 result is the
// correctly rounded one except when e^x lies within about 1e-13 of a
// rounding boundary (about one value in a million): the same numbers as
// float32(math.Exp(float64(x))), which the model used before, at a
// fraction of the cost. x = n·ln2 + r (Cody-Waite, |r| ≤ ln2/2), e^r by its
// Taylor series to r^11/11! (truncation below 2e-14), 2^n added to the
// exponent bits. x is clamped to [-110, 90]: e^x then rounds to 0 or +Inf
// in float32 as the exact value does. Constants as 32-byte vectors of
// float64.
DATA expdhi<>+0(SB)/8, $0x4056800000000000
DATA expdhi<>+8(SB)/8, $0x4056800000000000
DATA expdhi<>+16(SB)/8, $0x4056800000000000
DATA expdhi<>+24(SB)/8, $0x4056800000000000
GLOBL expdhi<>(SB), RODATA|NOPTR, $32
DATA expdlo<>+0(SB)/8, $0xc05b800000000000
DATA expdlo<>+8(SB)/8, $0xc05b800000000000
DATA expdlo<>+16(SB)/8, $0xc05b800000000000
DATA expdlo<>+24(SB)/8, $0xc05b800000000000
GLOBL expdlo<>(SB), RODATA|NOPTR, $32
DATA expdlog2e<>+0(SB)/8, $0x3ff71547652b82fe
DATA expdlog2e<>+8(SB)/8, $0x3ff71547652b82fe
DATA expdlog2e<>+16(SB)/8, $0x3ff71547652b82fe
DATA expdlog2e<>+24(SB)/8, $0x3ff71547652b82fe
GLOBL expdlog2e<>(SB), RODATA|NOPTR, $32
DATA expdln2hi<>+0(SB)/8, $0x3fe62e42fee00000
DATA expdln2hi<>+8(SB)/8, $0x3fe62e42fee00000
DATA expdln2hi<>+16(SB)/8, $0x3fe62e42fee00000
DATA expdln2hi<>+24(SB)/8, $0x3fe62e42fee00000
GLOBL expdln2hi<>(SB), RODATA|NOPTR, $32
DATA expdln2lo<>+0(SB)/8, $0x3dea39ef35793c76
DATA expdln2lo<>+8(SB)/8, $0x3dea39ef35793c76
DATA expdln2lo<>+16(SB)/8, $0x3dea39ef35793c76
DATA expdln2lo<>+24(SB)/8, $0x3dea39ef35793c76
GLOBL expdln2lo<>(SB), RODATA|NOPTR, $32
DATA expdc11<>+0(SB)/8, $0x3e5ae64567f544e4
DATA expdc11<>+8(SB)/8, $0x3e5ae64567f544e4
DATA expdc11<>+16(SB)/8, $0x3e5ae64567f544e4
DATA expdc11<>+24(SB)/8, $0x3e5ae64567f544e4
GLOBL expdc11<>(SB), RODATA|NOPTR, $32
DATA expdc10<>+0(SB)/8, $0x3e927e4fb7789f5c
DATA expdc10<>+8(SB)/8, $0x3e927e4fb7789f5c
DATA expdc10<>+16(SB)/8, $0x3e927e4fb7789f5c
DATA expdc10<>+24(SB)/8, $0x3e927e4fb7789f5c
GLOBL expdc10<>(SB), RODATA|NOPTR, $32
DATA expdc9<>+0(SB)/8, $0x3ec71de3a556c734
DATA expdc9<>+8(SB)/8, $0x3ec71de3a556c734
DATA expdc9<>+16(SB)/8, $0x3ec71de3a556c734
DATA expdc9<>+24(SB)/8, $0x3ec71de3a556c734
GLOBL expdc9<>(SB), RODATA|NOPTR, $32
DATA expdc8<>+0(SB)/8, $0x3efa01a01a01a01a
DATA expdc8<>+8(SB)/8, $0x3efa01a01a01a01a
DATA expdc8<>+16(SB)/8, $0x3efa01a01a01a01a
DATA expdc8<>+24(SB)/8, $0x3efa01a01a01a01a
GLOBL expdc8<>(SB), RODATA|NOPTR, $32
DATA expdc7<>+0(SB)/8, $0x3f2a01a01a01a01a
DATA expdc7<>+8(SB)/8, $0x3f2a01a01a01a01a
DATA expdc7<>+16(SB)/8, $0x3f2a01a01a01a01a
DATA expdc7<>+24(SB)/8, $0x3f2a01a01a01a01a
GLOBL expdc7<>(SB), RODATA|NOPTR, $32
DATA expdc6<>+0(SB)/8, $0x3f56c16c16c16c17
DATA expdc6<>+8(SB)/8, $0x3f56c16c16c16c17
DATA expdc6<>+16(SB)/8, $0x3f56c16c16c16c17
DATA expdc6<>+24(SB)/8, $0x3f56c16c16c16c17
GLOBL expdc6<>(SB), RODATA|NOPTR, $32
DATA expdc5<>+0(SB)/8, $0x3f81111111111111
DATA expdc5<>+8(SB)/8, $0x3f81111111111111
DATA expdc5<>+16(SB)/8, $0x3f81111111111111
DATA expdc5<>+24(SB)/8, $0x3f81111111111111
GLOBL expdc5<>(SB), RODATA|NOPTR, $32
DATA expdc4<>+0(SB)/8, $0x3fa5555555555555
DATA expdc4<>+8(SB)/8, $0x3fa5555555555555
DATA expdc4<>+16(SB)/8, $0x3fa5555555555555
DATA expdc4<>+24(SB)/8, $0x3fa5555555555555
GLOBL expdc4<>(SB), RODATA|NOPTR, $32
DATA expdc3<>+0(SB)/8, $0x3fc5555555555555
DATA expdc3<>+8(SB)/8, $0x3fc5555555555555
DATA expdc3<>+16(SB)/8, $0x3fc5555555555555
DATA expdc3<>+24(SB)/8, $0x3fc5555555555555
GLOBL expdc3<>(SB), RODATA|NOPTR, $32
DATA expdc2<>+0(SB)/8, $0x3fe0000000000000
DATA expdc2<>+8(SB)/8, $0x3fe0000000000000
DATA expdc2<>+16(SB)/8, $0x3fe0000000000000
DATA expdc2<>+24(SB)/8, $0x3fe0000000000000
GLOBL expdc2<>(SB), RODATA|NOPTR, $32
DATA expdc1<>+0(SB)/8, $0x3ff0000000000000
DATA expdc1<>+8(SB)/8, $0x3ff0000000000000
DATA expdc1<>+16(SB)/8, $0x3ff0000000000000
DATA expdc1<>+24(SB)/8, $0x3ff0000000000000
GLOBL expdc1<>(SB), RODATA|NOPTR, $32
DATA expdc0<>+0(SB)/8, $0x3ff0000000000000
DATA expdc0<>+8(SB)/8, $0x3ff0000000000000
DATA expdc0<>+16(SB)/8, $0x3ff0000000000000
DATA expdc0<>+24(SB)/8, $0x3ff0000000000000
GLOBL expdc0<>(SB), RODATA|NOPTR, $32
DATA expdbias<>+0(SB)/8, $1023
DATA expdbias<>+8(SB)/8, $1023
DATA expdbias<>+16(SB)/8, $1023
DATA expdbias<>+24(SB)/8, $1023
GLOBL expdbias<>(SB), RODATA|NOPTR, $32
DATA expone32<>+0(SB)/8, $0x3f8000003f800000
DATA expone32<>+8(SB)/8, $0x3f8000003f800000
GLOBL expone32<>(SB), RODATA|NOPTR, $16

// EXP4: X2 = e^X0 for four float32s; clobbers Y0, Y1, Y3.
#define EXP4 \
	VCVTPS2PD X0, Y0; \
	VMINPD expdhi<>(SB), Y0, Y0; \
	VMAXPD expdlo<>(SB), Y0, Y0; \
	VMULPD expdlog2e<>(SB), Y0, Y1; \
	VROUNDPD $0, Y1, Y1; \
	VFNMADD231PD expdln2hi<>(SB), Y1, Y0; \
	VFNMADD231PD expdln2lo<>(SB), Y1, Y0; \
	VMOVUPD expdc11<>(SB), Y2; \
	VFMADD213PD expdc10<>(SB), Y0, Y2; \
	VFMADD213PD expdc9<>(SB), Y0, Y2; \
	VFMADD213PD expdc8<>(SB), Y0, Y2; \
	VFMADD213PD expdc7<>(SB), Y0, Y2; \
	VFMADD213PD expdc6<>(SB), Y0, Y2; \
	VFMADD213PD expdc5<>(SB), Y0, Y2; \
	VFMADD213PD expdc4<>(SB), Y0, Y2; \
	VFMADD213PD expdc3<>(SB), Y0, Y2; \
	VFMADD213PD expdc2<>(SB), Y0, Y2; \
	VFMADD213PD expdc1<>(SB), Y0, Y2; \
	VFMADD213PD expdc0<>(SB), Y0, Y2; \
	VCVTPD2DQY Y1, X1; \
	VPMOVSXDQ X1, Y1; \
	VPADDQ expdbias<>(SB), Y1, Y1; \
	VPSLLQ $52, Y1, Y1; \
	VMULPD Y1, Y2, Y2; \
	VCVTPD2PSY Y2, X2

// func expF32AVX2(x *float32, n int): x[i] = e^x[i] (n a multiple of 4, > 0)
TEXT ·expF32AVX2(SB), NOSPLIT, $0-16
	MOVQ x+0(FP), DI
	MOVQ n+8(FP), CX

exploop:
	VMOVUPS (DI), X0
	EXP4
	VMOVUPS X2, (DI)
	ADDQ $16, DI
	SUBQ $4, CX
	JNZ  exploop

	VZEROUPPER
	RET

// func swiGLUF32AVX2(gate, up *float32, n int): gate[i] = silu(gate[i])·up[i]
// with silu(g) = g/(1+e^-g) in float32, as refSwiGLUF32 (n a multiple of 4).
TEXT ·swiGLUF32AVX2(SB), NOSPLIT, $0-24
	MOVQ gate+0(FP), DI
	MOVQ up+8(FP), SI
	MOVQ n+16(FP), CX
	VXORPS X5, X5, X5

gluloop:
	VMOVUPS (DI), X4
	VSUBPS X4, X5, X0
	EXP4
	VADDPS expone32<>(SB), X2, X2
	VDIVPS X2, X4, X4
	VMULPS (SI), X4, X4
	VMOVUPS X4, (DI)
	ADDQ $16, DI
	ADDQ $16, SI
	SUBQ $4, CX
	JNZ  gluloop

	VZEROUPPER
	RET

// EXP8: Z2's low half (Y2) = e^Y0 for eight float32s, EXP4's operations
// eight lanes wide (so the same bits); clobbers Z0, Z1. The constants are
// broadcast from the first float64 of EXP4's vectors.
#define EXP8 \
	VCVTPS2PD Y0, Z0; \
	VMINPD.BCST expdhi<>(SB), Z0, Z0; \
	VMAXPD.BCST expdlo<>(SB), Z0, Z0; \
	VMULPD.BCST expdlog2e<>(SB), Z0, Z1; \
	VRNDSCALEPD $0, Z1, Z1; \
	VFNMADD231PD.BCST expdln2hi<>(SB), Z1, Z0; \
	VFNMADD231PD.BCST expdln2lo<>(SB), Z1, Z0; \
	VBROADCASTSD expdc11<>(SB), Z2; \
	VFMADD213PD.BCST expdc10<>(SB), Z0, Z2; \
	VFMADD213PD.BCST expdc9<>(SB), Z0, Z2; \
	VFMADD213PD.BCST expdc8<>(SB), Z0, Z2; \
	VFMADD213PD.BCST expdc7<>(SB), Z0, Z2; \
	VFMADD213PD.BCST expdc6<>(SB), Z0, Z2; \
	VFMADD213PD.BCST expdc5<>(SB), Z0, Z2; \
	VFMADD213PD.BCST expdc4<>(SB), Z0, Z2; \
	VFMADD213PD.BCST expdc3<>(SB), Z0, Z2; \
	VFMADD213PD.BCST expdc2<>(SB), Z0, Z2; \
	VFMADD213PD.BCST expdc1<>(SB), Z0, Z2; \
	VFMADD213PD.BCST expdc0<>(SB), Z0, Z2; \
	VCVTPD2QQ Z1, Z1; \
	VPADDQ.BCST expdbias<>(SB), Z1, Z1; \
	VPSLLQ $52, Z1, Z1; \
	VMULPD Z1, Z2, Z2; \
	VCVTPD2PS Z2, Y2

// func expF32AVX512(x *float32, n int): expF32AVX2 eight at a time (n a
// multiple of 8, > 0).
TEXT ·expF32AVX512(SB), NOSPLIT, $0-16
	MOVQ x+0(FP), DI
	MOVQ n+8(FP), CX

exp8loop:
	VMOVUPS (DI), Y0
	EXP8
	VMOVUPS Y2, (DI)
	ADDQ $32, DI
	SUBQ $8, CX
	JNZ  exp8loop

	VZEROUPPER
	RET

// func swiGLUF32AVX512(gate, up *float32, n int): swiGLUF32AVX2 eight at a
// time (n a multiple of 8, > 0).
TEXT ·swiGLUF32AVX512(SB), NOSPLIT, $0-24
	MOVQ gate+0(FP), DI
	MOVQ up+8(FP), SI
	MOVQ n+16(FP), CX
	VXORPS Y5, Y5, Y5

glu8loop:
	VMOVUPS (DI), Y4
	VSUBPS Y4, Y5, Y0
	EXP8
	VADDPS.BCST expone32<>(SB), Y2, Y2
	VDIVPS Y2, Y4, Y4
	VMULPS (SI), Y4, Y4
	VMOVUPS Y4, (DI)
	ADDQ $32, DI
	ADDQ $32, SI
	SUBQ $8, CX
	JNZ  glu8loop

	VZEROUPPER
	RET

// The per-token element-wise work, sixteen floats at a time, each value's
// operations in plain Go's order (the same bits).

// func addF32AVX512(x, y *float32, n int): x[i] += y[i] (n a multiple of 16, > 0)
TEXT ·addF32AVX512(SB), NOSPLIT, $0-24
	MOVQ x+0(FP), DI
	MOVQ y+8(FP), SI
	MOVQ n+16(FP), CX

add16:
	VMOVUPS (DI), Z0
	VADDPS (SI), Z0, Z0
	VMOVUPS Z0, (DI)
	ADDQ $64, DI
	ADDQ $64, SI
	SUBQ $16, CX
	JNZ  add16

	VZEROUPPER
	RET

// func scaleMulF32AVX512(out, x *float32, s float32, gain *float32, n int):
// out[i] = (x[i]·s)·gain[i] (n a multiple of 16, > 0)
TEXT ·scaleMulF32AVX512(SB), NOSPLIT, $0-40
	MOVQ out+0(FP), DI
	MOVQ x+8(FP), SI
	VBROADCASTSS s+16(FP), Z1
	MOVQ gain+24(FP), DX
	MOVQ n+32(FP), CX

scale16:
	VMULPS (SI), Z1, Z0
	VMULPS (DX), Z0, Z0
	VMOVUPS Z0, (DI)
	ADDQ $64, DI
	ADDQ $64, SI
	ADDQ $64, DX
	SUBQ $16, CX
	JNZ  scale16

	VZEROUPPER
	RET

// RoPE: eight pairs (x0, x1) in sixteen lanes; cos and sin duplicated to
// both lanes of their pair, sin negated in the even ones, so that even
// lanes get x0·c + x1·(−s) = x0·c − x1·s and odd ones x1·c + x0·s.
DATA ropedup<>+0(SB)/8, $0x0000000000000000
DATA ropedup<>+8(SB)/8, $0x0000000100000001
DATA ropedup<>+16(SB)/8, $0x0000000200000002
DATA ropedup<>+24(SB)/8, $0x0000000300000003
DATA ropedup<>+32(SB)/8, $0x0000000400000004
DATA ropedup<>+40(SB)/8, $0x0000000500000005
DATA ropedup<>+48(SB)/8, $0x0000000600000006
DATA ropedup<>+56(SB)/8, $0x0000000700000007
GLOBL ropedup<>(SB), RODATA|NOPTR, $64
DATA ropesign<>+0(SB)/8, $0x0000000080000000
DATA ropesign<>+8(SB)/8, $0x0000000080000000
DATA ropesign<>+16(SB)/8, $0x0000000080000000
DATA ropesign<>+24(SB)/8, $0x0000000080000000
DATA ropesign<>+32(SB)/8, $0x0000000080000000
DATA ropesign<>+40(SB)/8, $0x0000000080000000
DATA ropesign<>+48(SB)/8, $0x0000000080000000
DATA ropesign<>+56(SB)/8, $0x0000000080000000
GLOBL ropesign<>(SB), RODATA|NOPTR, $64

// func ropeF32AVX512(vec, cos, sin *float32, n int): the first n pairs of
// one head (n a multiple of 8, > 0)
TEXT ·ropeF32AVX512(SB), NOSPLIT, $0-32
	MOVQ vec+0(FP), DI
	MOVQ cos+8(FP), SI
	MOVQ sin+16(FP), DX
	MOVQ n+24(FP), CX
	VMOVDQU32 ropedup<>(SB), Z5
	VMOVDQU32 ropesign<>(SB), Z4

rope8:
	VMOVUPS (SI), Y2
	VPERMPS Z2, Z5, Z2
	VMOVUPS (DX), Y3
	VPERMPS Z3, Z5, Z3
	VPXORD Z4, Z3, Z3
	VMOVUPS (DI), Z0
	VPERMILPS $0xB1, Z0, Z1
	VMULPS Z2, Z0, Z0
	VMULPS Z3, Z1, Z1
	VADDPS Z1, Z0, Z0
	VMOVUPS Z0, (DI)
	ADDQ $64, DI
	ADDQ $32, SI
	ADDQ $32, DX
	SUBQ $8, CX
	JNZ  rope8

	VZEROUPPER
	RET

// ---------------------------------------------------------------------------
// The KV cache in half precision: conversion, and attention's row kernels
// over fp16 rows (F16C converts eight values on load).

// func f32ToF16AVX2(dst *uint16, src *float32, n int) (n a multiple of 8, > 0)
// Round to nearest even, as GGML's FP32_TO_FP16.
TEXT ·f32ToF16AVX2(SB), NOSPLIT, $0-24
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX

tohalfloop:
	VMOVUPS (SI), Y0
	VCVTPS2PH $0, Y0, X0
	VMOVDQU X0, (DI)
	ADDQ $32, SI
	ADDQ $16, DI
	SUBQ $8, CX
	JNZ  tohalfloop

	VZEROUPPER
	RET

// func roundF16AVX2(x *float32, n int): x[i] rounded to the nearest fp16
// value, in place (n a multiple of 8, > 0).
TEXT ·roundF16AVX2(SB), NOSPLIT, $0-16
	MOVQ x+0(FP), DI
	MOVQ n+8(FP), CX

roundhalfloop:
	VMOVUPS (DI), Y0
	VCVTPS2PH $0, Y0, X0
	VCVTPH2PS X0, Y0
	VMOVUPS Y0, (DI)
	ADDQ $32, DI
	SUBQ $8, CX
	JNZ  roundhalfloop

	VZEROUPPER
	RET

// ---------------------------------------------------------------------------
// Float weights × four tokens, AVX-512: 4 rows × 4 tokens in sixteen 16-wide
// accumulators (Z0..Z15, token t row r in Z(4t+r)); each block of 16
// columns of the four rows is converted once (F16) and used for all four
// tokens, where the 4-row kernels convert it again for every token.


// FTILE_STEP: 16 columns of the four rows (loaded with load, step bytes
// each) times the four tokens.
#define FTILE_STEP(load, step) \
	load (R8), Z16; \
	load (R9), Z17; \
	load (R10), Z18; \
	load (R11), Z19; \
	VMOVUPS (SI), Z20; \
	VFMADD231PS Z16, Z20, Z0; \
	VFMADD231PS Z17, Z20, Z1; \
	VFMADD231PS Z18, Z20, Z2; \
	VFMADD231PS Z19, Z20, Z3; \
	VMOVUPS (DI), Z20; \
	VFMADD231PS Z16, Z20, Z4; \
	VFMADD231PS Z17, Z20, Z5; \
	VFMADD231PS Z18, Z20, Z6; \
	VFMADD231PS Z19, Z20, Z7; \
	VMOVUPS (R12), Z20; \
	VFMADD231PS Z16, Z20, Z8; \
	VFMADD231PS Z17, Z20, Z9; \
	VFMADD231PS Z18, Z20, Z10; \
	VFMADD231PS Z19, Z20, Z11; \
	VMOVUPS (R13), Z20; \
	VFMADD231PS Z16, Z20, Z12; \
	VFMADD231PS Z17, Z20, Z13; \
	VFMADD231PS Z18, Z20, Z14; \
	VFMADD231PS Z19, Z20, Z15; \
	ADDQ $step, R8; \
	ADDQ $step, R9; \
	ADDQ $step, R10; \
	ADDQ $step, R11; \
	ADDQ $64, SI; \
	ADDQ $64, DI; \
	ADDQ $64, R12; \
	ADDQ $64, R13

// FTILE_ZERO clears the sixteen accumulators.
#define FTILE_ZERO \
	VPXORD Z0, Z0, Z0; \
	VPXORD Z1, Z1, Z1; \
	VPXORD Z2, Z2, Z2; \
	VPXORD Z3, Z3, Z3; \
	VPXORD Z4, Z4, Z4; \
	VPXORD Z5, Z5, Z5; \
	VPXORD Z6, Z6, Z6; \
	VPXORD Z7, Z7, Z7; \
	VPXORD Z8, Z8, Z8; \
	VPXORD Z9, Z9, Z9; \
	VPXORD Z10, Z10, Z10; \
	VPXORD Z11, Z11, Z11; \
	VPXORD Z12, Z12, Z12; \
	VPXORD Z13, Z13, Z13; \
	VPXORD Z14, Z14, Z14; \
	VPXORD Z15, Z15, Z15

// FTILE_SUM stores the sum of accumulator Z(i)'s 16 lanes (y, x: its lower
// halves) at off(AX).
#define FTILE_SUM(z, y, x, off) \
	VEXTRACTF64X4 $1, z, Y21; \
	VADDPS Y21, y, y; \
	VEXTRACTF32X4 $1, y, X21; \
	VADDPS X21, x, x; \
	VHADDPS x, x, x; \
	VHADDPS x, x, x; \
	VMOVSS x, off(AX)

// FTILE_END: the sum of each accumulator's 16 lanes to out[4t+r].
#define FTILE_END \
	FTILE_SUM(Z0, Y0, X0, 0); \
	FTILE_SUM(Z1, Y1, X1, 4); \
	FTILE_SUM(Z2, Y2, X2, 8); \
	FTILE_SUM(Z3, Y3, X3, 12); \
	FTILE_SUM(Z4, Y4, X4, 16); \
	FTILE_SUM(Z5, Y5, X5, 20); \
	FTILE_SUM(Z6, Y6, X6, 24); \
	FTILE_SUM(Z7, Y7, X7, 28); \
	FTILE_SUM(Z8, Y8, X8, 32); \
	FTILE_SUM(Z9, Y9, X9, 36); \
	FTILE_SUM(Z10, Y10, X10, 40); \
	FTILE_SUM(Z11, Y11, X11, 44); \
	FTILE_SUM(Z12, Y12, X12, 48); \
	FTILE_SUM(Z13, Y13, X13, 52); \
	FTILE_SUM(Z14, Y14, X14, 56); \
	FTILE_SUM(Z15, Y15, X15, 60); \
	VZEROUPPER

// func f16x4x4AVX512(w0, w1, w2, w3 *byte, x0, x1, x2, x3 *float32, n int, out *[16]float32)
// out[4t+r] = row r · token t over n columns (a multiple of 16, > 0), half-precision
// rows; each row block is loaded once for the four tokens.
TEXT ·f16x4x4AVX512(SB), NOSPLIT, $0-80
	FTILE_ARGS
f16tloop:
	FTILE_STEP(VCVTPH2PS, 32)
	SUBQ $16, CX
	JNZ  f16tloop
	FTILE_END
	RET

// func f32x4x4AVX512(w0, w1, w2, w3 *byte, x0, x1, x2, x3 *float32, n int, out *[16]float32)
// out[4t+r] = row r · token t over n columns (a multiple of 16, > 0), float32
// rows; each row block is loaded once for the four tokens.
TEXT ·f32x4x4AVX512(SB), NOSPLIT, $0-80
	FTILE_ARGS
f32tloop:
	FTILE_STEP(VMOVUPS, 64)
	SUBQ $16, CX
	JNZ  f32tloop
	FTILE_END
	RET

// Attention over a half-precision KV cache, all heads of a token at once:
// position by position, the keys (values) of every head are read in one
// sequential pass over the cache row, where one head at a time would walk
// the rows with a stride and wait on memory at each. Head h reads KV head
// h/group. Per (position, head) the arithmetic is dotRowsF16AVX2's and
// axpyRowsF16AVX2's, in the same order, so the results are the same bits.

// func dotHeadsF16AVX2(q *float32, rows *uint16, stride, n, heads, hd, group int, out *float32)
// out[t*heads+h] = q[h*hd:(h+1)*hd] · rows[t*stride+(h/group)*hd:][:hd]
// for t < n, h < heads (hd a multiple of 8).
TEXT ·dotHeadsF16AVX2(SB), NOSPLIT, $0-64
	MOVQ q+0(FP), SI
	MOVQ rows+8(FP), DI
	MOVQ stride+16(FP), R8
	SHLQ $1, R8
	MOVQ n+24(FP), DX
	MOVQ heads+32(FP), R10
	MOVQ hd+40(FP), R9
	MOVQ group+48(FP), AX
	MOVQ out+56(FP), BX

dhpos:
	MOVQ SI, R11
	MOVQ DI, R12
	MOVQ R10, R13
	MOVQ AX, R14

dhhead:
	MOVQ R12, R15
	MOVQ R9, CX
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	CMPQ CX, $32
	JB   dhtail16

dhdot:
	VCVTPH2PS (R15), Y4
	VCVTPH2PS 16(R15), Y5
	VCVTPH2PS 32(R15), Y6
	VCVTPH2PS 48(R15), Y7
	VFMADD231PS (R11), Y4, Y0
	VFMADD231PS 32(R11), Y5, Y1
	VFMADD231PS 64(R11), Y6, Y2
	VFMADD231PS 96(R11), Y7, Y3
	ADDQ $128, R11
	ADDQ $64, R15
	SUBQ $32, CX
	CMPQ CX, $32
	JAE  dhdot

// Head sizes that are a multiple of 8 but not of 32 (48: stories15M):
// the last 16 and 8 elements.
dhtail16:
	CMPQ CX, $16
	JB   dhtail8
	VCVTPH2PS (R15), Y4
	VCVTPH2PS 16(R15), Y5
	VFMADD231PS (R11), Y4, Y0
	VFMADD231PS 32(R11), Y5, Y1
	ADDQ $64, R11
	ADDQ $32, R15
	SUBQ $16, CX

dhtail8:
	CMPQ CX, $8
	JB   dhsum
	VCVTPH2PS (R15), Y4
	VFMADD231PS (R11), Y4, Y0
	ADDQ $32, R11
	ADDQ $16, R15

dhsum:
	DOTSUM
	MOVSS X0, (BX)
	ADDQ $4, BX
	DECQ R14
	JNZ  dhsamekv
	MOVQ R15, R12 // the next KV head follows this one
	MOVQ AX, R14

dhsamekv:
	DECQ R13
	JNZ  dhhead
	ADDQ R8, DI
	DECQ DX
	JNZ  dhpos

	VZEROUPPER
	RET

// func axpyHeadsF16AVX2(out, w *float32, rows *uint16, stride, n, heads, hd, group int)
// out[h*hd:(h+1)*hd] += w[t*heads+h] · rows[t*stride+(h/group)*hd:][:hd]
// for t < n in order, h < heads (hd a multiple of 8).
TEXT ·axpyHeadsF16AVX2(SB), NOSPLIT, $0-64
	MOVQ out+0(FP), BX
	MOVQ w+8(FP), SI
	MOVQ rows+16(FP), DI
	MOVQ stride+24(FP), R8
	SHLQ $1, R8
	MOVQ n+32(FP), DX
	MOVQ heads+40(FP), R10
	MOVQ hd+48(FP), R9
	MOVQ group+56(FP), AX

ahpos:
	MOVQ BX, R11
	MOVQ DI, R12
	MOVQ R10, R13
	MOVQ AX, R14

ahhead:
	VBROADCASTSS (SI), Y0
	ADDQ $4, SI
	MOVQ R12, R15
	MOVQ R9, CX
	CMPQ CX, $32
	JB   ahtail8

ahchunk:
	VCVTPH2PS (R15), Y5
	VCVTPH2PS 16(R15), Y6
	VCVTPH2PS 32(R15), Y7
	VCVTPH2PS 48(R15), Y8
	VMOVUPS (R11), Y1
	VMOVUPS 32(R11), Y2
	VMOVUPS 64(R11), Y3
	VMOVUPS 96(R11), Y4
	VFMADD231PS Y5, Y0, Y1
	VFMADD231PS Y6, Y0, Y2
	VFMADD231PS Y7, Y0, Y3
	VFMADD231PS Y8, Y0, Y4
	VMOVUPS Y1, (R11)
	VMOVUPS Y2, 32(R11)
	VMOVUPS Y3, 64(R11)
	VMOVUPS Y4, 96(R11)
	ADDQ $128, R11
	ADDQ $64, R15
	SUBQ $32, CX
	CMPQ CX, $32
	JAE  ahchunk

// Head sizes that are a multiple of 8 but not of 32: 8 at a time.
ahtail8:
	CMPQ CX, $8
	JB   ahnext
	VCVTPH2PS (R15), Y5
	VMOVUPS (R11), Y1
	VFMADD231PS Y5, Y0, Y1
	VMOVUPS Y1, (R11)
	ADDQ $32, R11
	ADDQ $16, R15
	SUBQ $8, CX
	JMP  ahtail8

ahnext:
	DECQ R14
	JNZ  ahsamekv
	MOVQ R15, R12
	MOVQ AX, R14

ahsamekv:
	DECQ R13
	JNZ  ahhead
	ADDQ R8, DI
	DECQ DX
	JNZ  ahpos

	VZEROUPPER
	RET
