//go:build amd64 && !purego

#include "textflag.h"

// Lane kernels: Q4_0 / Q8_0 weights in the lane layout (lanes.go) × tokens
// in the lane activation layout, AVX-512 VNNI. Dword lane 4r+k of a 512-bit
// register is row r's columns 4k..4k+3 of a block, so one VPDPBUSD works on
// four rows at once and the float work (convert, scale, add) is done once
// per block for four rows instead of once per row.

// laneperm: VPERMPS indexes copying floats 0..3 four times each.
DATA laneperm<>+0(SB)/8, $0x0000000000000000
DATA laneperm<>+8(SB)/8, $0x0000000000000000
DATA laneperm<>+16(SB)/8, $0x0000000100000001
DATA laneperm<>+24(SB)/8, $0x0000000100000001
DATA laneperm<>+32(SB)/8, $0x0000000200000002
DATA laneperm<>+40(SB)/8, $0x0000000200000002
DATA laneperm<>+48(SB)/8, $0x0000000300000003
DATA laneperm<>+56(SB)/8, $0x0000000300000003
GLOBL laneperm<>(SB), RODATA|NOPTR, $64

// Whole chunks: pairs pairs of groups (eight rows each, one after another)
// × all n tokens (groups of four, tokBytes apart in a, the last padded);
// the row sums of token t go to out + t*stride bytes. For each pair of
// groups the 8-row tile runs over every token group while the rows stay
// in L1; its first token group prefetches the next pair's weights, as
// laneRows did with q80LaneTile8 (the same arithmetic, in the same order,
// so the results are the same bits), without a call per tile.
#define LROWS8_BODY(lw, lwb, bytes) \
	MOVQ CX, R13; \
	IMULQ $bytes, R13; \
	MOVQ R8, AX; \
	MOVQ DI, pairout-8(SP); \
lrowspair: \
	MOVQ pairout-8(SP), DI; \
	MOVQ a+8(FP), SI; \
	MOVQ n+48(FP), R12; \
	XORQ R14, R14; \
	CMPQ DX, $1; \
	JEQ lrowspfset; \
	LEAQ (R13)(R13*1), R14; \
lrowspfset: \
	LEAQ (R14)(R13*1), R15; \
lrowstok: \
	VPXORD Z0, Z0, Z0; \
	VPXORD Z1, Z1, Z1; \
	VPXORD Z2, Z2, Z2; \
	VPXORD Z3, Z3, Z3; \
	VPXORD Z16, Z16, Z16; \
	VPXORD Z17, Z17, Z17; \
	VPXORD Z18, Z18, Z18; \
	VPXORD Z19, Z19, Z19; \
	MOVQ AX, R8; \
	MOVQ SI, R9; \
	MOVQ CX, R10; \
lrowsblock: \
	TESTQ R14, R14; \
	JZ lrowsnopf; \
	PREFETCHT0 (R8)(R14*1); \
	PREFETCHT0 64(R8)(R14*1); \
	PREFETCHT0 128(R8)(R14*1); \
	PREFETCHT0 (R8)(R15*1); \
	PREFETCHT0 64(R8)(R15*1); \
	PREFETCHT0 128(R8)(R15*1); \
lrowsnopf: \
	LSCALES(R8); \
	lw(R8); \
	LSCALES2(R8); \
	lwb(R8); \
	LTOKEN8(0, Z0, Z16, Z20, Z21, Z22, Z23, Z24, Z25); \
	LTOKEN8(64, Z1, Z17, Z26, Z27, Z28, Z29, Z30, Z31); \
	LTOKEN8(128, Z2, Z18, Z20, Z21, Z22, Z23, Z24, Z25); \
	LTOKEN8(192, Z3, Z19, Z26, Z27, Z28, Z29, Z30, Z31); \
	ADDQ $bytes, R8; \
	ADDQ $256, R9; \
	DECQ R10; \
	JNZ lrowsblock; \
	LSTORE4(DI, lrowsstored0); \
	VMOVAPS Z16, Z0; \
	VMOVAPS Z17, Z1; \
	VMOVAPS Z18, Z2; \
	VMOVAPS Z19, Z3; \
	LEAQ 16(DI), R9; \
	LSTORE4(R9, lrowsstored1); \
	XORQ R14, R14; \
	ADDQ tokBytes+56(FP), SI; \
	LEAQ (DI)(BX*4), DI; \
	SUBQ $4, R12; \
	JGT lrowstok; \
	LEAQ (AX)(R13*2), AX; \
	ADDQ $32, pairout-8(SP); \
	DECQ DX; \
	JNZ lrowspair

#define LROWS_SETUP \
	MOVQ w+0(FP), R8; \
	MOVQ nb+16(FP), CX; \
	MOVQ pairs+24(FP), DX; \
	MOVQ out+32(FP), DI; \
	MOVQ stride+40(FP), BX; \
	LEAQ (BX)(BX*2), R11; \
	VMOVDQU32 laneperm<>(SB), Z14

// LSCALES: the group's four fp16 row scales at wp, each in four lanes (Z4).
#define LSCALES(wp) \
	VCVTPH2PS (wp), X4; \
	VPERMPS Z4, Z14, Z4

// Q4_0 weights of a group's block: low nibbles in Z5, high in Z6.
#define LW40(wp) \
	VMOVDQU64 8(wp), Z5; \
	VPSRLW $4, Z5, Z6; \
	VPANDD Z15, Z5, Z5; \
	VPANDD Z15, Z6, Z6

// Q8_0 weights of a group's block, stored +128 (unsigned): halves in Z5
// and Z6.
#define LW80(wp) \
	VMOVDQU64 8(wp), Z5; \
	VMOVDQU64 72(wp), Z6

// LTOKEN: acc += Σ_block per lane, token record at off(R9); temps t1..t3.
#define LTOKEN(off, acc, t1, t2, t3) \
	VBROADCASTI32X4 (off+32)(R9), t1; \
	VBROADCASTI32X4 (off)(R9), t3; \
	VPDPBUSD t3, Z5, t1; \
	VBROADCASTI32X4 (off+16)(R9), t3; \
	VPDPBUSD t3, Z6, t1; \
	VCVTDQ2PS t1, t1; \
	VMULPS.BCST (off+48)(R9), Z4, t2; \
	VFMADD231PS t2, t1, acc

// LREDUCE: the four row sums of lanes 4r+k of zacc (low half yacc) to dst.
#define LREDUCE(zacc, yacc, dst) \
	VEXTRACTF64X4 $1, zacc, Y7; \
	VHADDPS Y7, yacc, Y8; \
	VHADDPS Y8, Y8, Y8; \
	VEXTRACTF128 $1, Y8, X9; \
	VUNPCKLPS X9, X8, X8; \
	VMOVUPS X8, dst

#define LVEC_BODY(lw, bytes) \
lvecgroup: \
	VPXORD Z0, Z0, Z0; \
	MOVQ SI, R9; \
	MOVQ CX, R10; \
lvecblock: \
	LSCALES(R8); \
	lw(R8); \
	LTOKEN(0, Z0, Z16, Z17, Z24); \
	ADDQ $bytes, R8; \
	ADDQ $64, R9; \
	DECQ R10; \
	JNZ lvecblock; \
	LREDUCE(Z0, Y0, (DI)); \
	ADDQ $16, DI; \
	DECQ DX; \
	JNZ lvecgroup

#define LANE_SETUP \
	MOVQ w+0(FP), R8; \
	MOVQ a+8(FP), SI; \
	MOVQ nb+16(FP), CX; \
	MOVQ groups+24(FP), DX; \
	MOVQ out+32(FP), DI; \
	VMOVDQU32 laneperm<>(SB), Z14

#define TILE_STRIDE \
	MOVQ stride+40(FP), BX; \
	MOVQ ntok+48(FP), R12; \
	LEAQ (BX)(BX*2), R11

// func q40LaneVec(w, a *byte, nb, groups int, out *float32)
TEXT ·q40LaneVec(SB), NOSPLIT, $0-40
	LANE_SETUP
	MOVL $0x0f, AX
	VPBROADCASTB AX, Z15
	LVEC_BODY(LW40, 72)
	VZEROUPPER
	RET

// func q80LaneVec(w, a *byte, nb, groups int, out *float32)
TEXT ·q80LaneVec(SB), NOSPLIT, $0-40
	LANE_SETUP
	LVEC_BODY(LW80, 136)
	VZEROUPPER
	RET

// Four tokens (records 64 bytes apart, 256 bytes per block); row sums of
// token t go to out + t*stride bytes, for the first ntok tokens only (the
// others are padding of a last, partial group).
#define LTILE_BODY(lw, bytes) \
ltilegroup: \
	VPXORD Z0, Z0, Z0; \
	VPXORD Z1, Z1, Z1; \
	VPXORD Z2, Z2, Z2; \
	VPXORD Z3, Z3, Z3; \
	MOVQ SI, R9; \
	MOVQ CX, R10; \
ltileblock: \
	LSCALES(R8); \
	lw(R8); \
	LTOKEN(0, Z0, Z16, Z17, Z24); \
	LTOKEN(64, Z1, Z18, Z19, Z25); \
	LTOKEN(128, Z2, Z20, Z21, Z26); \
	LTOKEN(192, Z3, Z22, Z23, Z27); \
	ADDQ $bytes, R8; \
	ADDQ $256, R9; \
	DECQ R10; \
	JNZ ltileblock; \
	LREDUCE(Z0, Y0, (DI)); \
	CMPQ R12, $2; \
	JLT ltilestored; \
	LREDUCE(Z1, Y1, (DI)(BX*1)); \
	CMPQ R12, $3; \
	JLT ltilestored; \
	LREDUCE(Z2, Y2, (DI)(BX*2)); \
	CMPQ R12, $4; \
	JLT ltilestored; \
	LREDUCE(Z3, Y3, (DI)(R11*1)); \
ltilestored: \
	ADDQ $16, DI; \
	DECQ DX; \
	JNZ ltilegroup

// func q40LaneTile(w, a *byte, nb, groups int, out *float32, stride, ntok int)
TEXT ·q40LaneTile(SB), NOSPLIT, $0-56
	LANE_SETUP
	TILE_STRIDE
	MOVL $0x0f, AX
	VPBROADCASTB AX, Z15
	LTILE_BODY(LW40, 72)
	VZEROUPPER
	RET

// func q80LaneTile(w, a *byte, nb, groups int, out *float32, stride, ntok int)
TEXT ·q80LaneTile(SB), NOSPLIT, $0-56
	LANE_SETUP
	TILE_STRIDE
	LTILE_BODY(LW80, 136)
	VZEROUPPER
	RET

// Eight rows (two groups, the second R13 bytes after the first) × four
// tokens: each token's record is loaded once for both groups. With pf > 0
// each block of weights also prefetches the block pf bytes on in both
// groups (the next rows a caller will multiply): spread over the loop, the
// fetch overlaps arithmetic instead of stalling a burst of prefetches.

// LTOKEN8: token record at off(R9) into both groups' accumulators.
#define LTOKEN8(off, acc0, acc1, c, l, h, t1, t2, t3) \
	VBROADCASTI32X4 (off+32)(R9), c; \
	VBROADCASTI32X4 (off)(R9), l; \
	VBROADCASTI32X4 (off+16)(R9), h; \
	VMOVDQA32 c, t1; \
	VPDPBUSD l, Z5, t1; \
	VPDPBUSD h, Z6, t1; \
	VPDPBUSD l, Z10, c; \
	VPDPBUSD h, Z11, c; \
	VCVTDQ2PS t1, t1; \
	VCVTDQ2PS c, c; \
	VMULPS.BCST (off+48)(R9), Z4, t2; \
	VMULPS.BCST (off+48)(R9), Z7, t3; \
	VFMADD231PS t2, t1, acc0; \
	VFMADD231PS t3, c, acc1

// Second group's scales (Z7) and weights (Z10, Z11), Q4_0 and Q8_0.
#define LSCALES2(wp) \
	VCVTPH2PS (wp)(R13*1), X7; \
	VPERMPS Z7, Z14, Z7

#define LW40B(wp) \
	VMOVDQU64 8(wp)(R13*1), Z10; \
	VPSRLW $4, Z10, Z11; \
	VPANDD Z15, Z10, Z10; \
	VPANDD Z15, Z11, Z11

#define LW80B(wp) \
	VMOVDQU64 8(wp)(R13*1), Z10; \
	VMOVDQU64 72(wp)(R13*1), Z11

// LSTORE4: the row sums of Z0..Z3 (tokens 0..3) at dst, first R12 tokens.
#define LSTORE4(dst, done) \
	LREDUCE(Z0, Y0, (dst)); \
	CMPQ R12, $2; \
	JLT done; \
	LREDUCE(Z1, Y1, (dst)(BX*1)); \
	CMPQ R12, $3; \
	JLT done; \
	LREDUCE(Z2, Y2, (dst)(BX*2)); \
	CMPQ R12, $4; \
	JLT done; \
	LREDUCE(Z3, Y3, (dst)(R11*1)); \
done:

#define LTILE8_BODY(lw, lwb, bytes) \
	MOVQ CX, R13; \
	IMULQ $bytes, R13; \
	LEAQ (R14)(R13*1), R15; \
	SHRQ $1, DX; \
ltile8group: \
	VPXORD Z0, Z0, Z0; \
	VPXORD Z1, Z1, Z1; \
	VPXORD Z2, Z2, Z2; \
	VPXORD Z3, Z3, Z3; \
	VPXORD Z16, Z16, Z16; \
	VPXORD Z17, Z17, Z17; \
	VPXORD Z18, Z18, Z18; \
	VPXORD Z19, Z19, Z19; \
	MOVQ SI, R9; \
	MOVQ CX, R10; \
ltile8block: \
	TESTQ R14, R14; \
	JZ ltile8nopf; \
	PREFETCHT0 (R8)(R14*1); \
	PREFETCHT0 64(R8)(R14*1); \
	PREFETCHT0 128(R8)(R14*1); \
	PREFETCHT0 (R8)(R15*1); \
	PREFETCHT0 64(R8)(R15*1); \
	PREFETCHT0 128(R8)(R15*1); \
ltile8nopf: \
	LSCALES(R8); \
	lw(R8); \
	LSCALES2(R8); \
	lwb(R8); \
	LTOKEN8(0, Z0, Z16, Z20, Z21, Z22, Z23, Z24, Z25); \
	LTOKEN8(64, Z1, Z17, Z26, Z27, Z28, Z29, Z30, Z31); \
	LTOKEN8(128, Z2, Z18, Z20, Z21, Z22, Z23, Z24, Z25); \
	LTOKEN8(192, Z3, Z19, Z26, Z27, Z28, Z29, Z30, Z31); \
	ADDQ $bytes, R8; \
	ADDQ $256, R9; \
	DECQ R10; \
	JNZ ltile8block; \
	LSTORE4(DI, ltile8stored0); \
	VMOVAPS Z16, Z0; \
	VMOVAPS Z17, Z1; \
	VMOVAPS Z18, Z2; \
	VMOVAPS Z19, Z3; \
	LEAQ 16(DI), R9; \
	LSTORE4(R9, ltile8stored1); \
	ADDQ $32, DI; \
	ADDQ R13, R8; \
	DECQ DX; \
	JNZ ltile8group

// func q40LaneTile8(w, a *byte, nb, groups int, out *float32, stride, ntok, pf int) (groups even)
TEXT ·q40LaneTile8(SB), NOSPLIT, $0-64
	LANE_SETUP
	TILE_STRIDE
	MOVQ pf+56(FP), R14
	MOVL $0x0f, AX
	VPBROADCASTB AX, Z15
	LTILE8_BODY(LW40, LW40B, 72)
	VZEROUPPER
	RET

// func q80LaneTile8(w, a *byte, nb, groups int, out *float32, stride, ntok, pf int) (groups even)
TEXT ·q80LaneTile8(SB), NOSPLIT, $0-64
	LANE_SETUP
	TILE_STRIDE
	MOVQ pf+56(FP), R14
	LTILE8_BODY(LW80, LW80B, 136)
	VZEROUPPER
	RET

// func q40LaneRows8(w, a *byte, nb, pairs int, out *float32, stride, n, tokBytes int)
TEXT ·q40LaneRows8(SB), NOSPLIT, $8-64
	LROWS_SETUP
	MOVL $0x0f, R12
	VPBROADCASTB R12, Z15
	LROWS8_BODY(LW40, LW40B, 72)
	VZEROUPPER
	RET

// func q80LaneRows8(w, a *byte, nb, pairs int, out *float32, stride, n, tokBytes int)
TEXT ·q80LaneRows8(SB), NOSPLIT, $8-64
	LROWS_SETUP
	LROWS8_BODY(LW80, LW80B, 136)
	VZEROUPPER
	RET

// Lane activation records of one token (lanes.go), as quantizeLaneToken
// writes them, bit for bit: per block of 32, d = max|x|/127 rounded to
// fp16, q = x·(127/max|x|) rounded half to even (NaN → 0), corrections.

DATA absmask<>+0(SB)/4, $0x7fffffff
GLOBL absmask<>(SB), RODATA|NOPTR, $4
DATA f127<>+0(SB)/4, $127.0
GLOBL f127<>(SB), RODATA|NOPTR, $4
DATA ones8<>+0(SB)/8, $0x0101010101010101
DATA ones8<>+8(SB)/8, $0x0101010101010101
GLOBL ones8<>(SB), RODATA|NOPTR, $16

#define QL_ARGS \
	MOVQ x+0(FP), SI; \
	MOVQ rec+8(FP), DI; \
	MOVQ nb+16(FP), CX; \
	MOVQ step+24(FP), DX; \
	MOVQ k+32(FP), AX

// func quantLaneAVX512(x *float32, rec *byte, nb, step, k int)
TEXT ·quantLaneAVX512(SB), NOSPLIT, $0-40
	QL_ARGS
	NEGQ AX
	VPBROADCASTD AX, X10           // -K in every dword
	VPBROADCASTD absmask<>(SB), Z11
	VMOVSS f127<>(SB), X12
	VMOVDQU ones8<>(SB), X13
	VPXORD Z31, Z31, Z31
	VBROADCASTSS X12, Z14          // 127
	VXORPS Z15, Z15, Z15
	VSUBPS Z14, Z15, Z15           // -127

qlblock:
	VMOVUPS (SI), Z0
	VMOVUPS 64(SI), Z1
	VCMPPS $3, Z0, Z0, K1          // NaN lanes
	VCMPPS $3, Z1, Z1, K2
	VPANDD Z11, Z0, Z2
	VPANDD Z11, Z1, Z3
	VMOVDQA32 Z31, K1, Z2          // NaN counts as 0 in the maximum
	VMOVDQA32 Z31, K2, Z3
	VPMAXUD Z3, Z2, Z2             // |x| as integers orders like floats
	VEXTRACTI64X4 $1, Z2, Y3
	VPMAXUD Y3, Y2, Y2
	VEXTRACTI128 $1, Y2, X3
	VPMAXUD X3, X2, X2
	VPSHUFD $0x4e, X2, X3
	VPMAXUD X3, X2, X2
	VPSHUFD $0xb1, X2, X3
	VPMAXUD X3, X2, X2             // amax in lane 0
	VMOVD X2, BX
	TESTL BX, BX
	JZ qlzero

	VDIVSS X12, X2, X4             // d = amax/127
	VCVTPS2PH $0, X4, X5           // rounded to fp16, nearest even
	VCVTPH2PS X5, X4
	VDIVSS X2, X12, X6             // 127/amax
	VBROADCASTSS X6, Z6
	VMULPS Z6, Z0, Z0
	VMULPS Z6, Z1, Z1
	VCMPPS $3, Z0, Z0, K1          // NaN products (NaN or ±Inf inputs) quantize to 0
	VCMPPS $3, Z1, Z1, K2
	VMINPS Z14, Z0, Z0             // ±Inf products (a subnormal block's 127/amax overflows) to ±127
	VMINPS Z14, Z1, Z1
	VMAXPS Z15, Z0, Z0
	VMAXPS Z15, Z1, Z1
	VCVTPS2DQ Z0, Z0               // nearest even (MXCSR default)
	VCVTPS2DQ Z1, Z1
	VMOVDQA32 Z31, K1, Z0
	VMOVDQA32 Z31, K2, Z1
	VPMOVSDB Z0, X7
	VPMOVSDB Z1, X8
	VMOVDQU X7, (DI)
	VMOVDQU X8, 16(DI)
	VPXORD X9, X9, X9
	VPDPBUSD X7, X13, X9           // Σ of each 4 low-half qs
	VPDPBUSD X8, X13, X9           // + the 4 high-half qs 16 columns on
	VPMULLD X10, X9, X9
	VMOVDQU X9, 32(DI)
	VMOVSS X4, 48(DI)
	JMP qlnext

qlzero:
	VMOVDQU64 Y31, (DI)            // qs
	VMOVDQU64 X31, 32(DI)          // corrections
	MOVL $0, 48(DI)                // d

qlnext:
	ADDQ $128, SI
	ADDQ DX, DI
	DECQ CX
	JNZ qlblock
	VZEROUPPER
	RET
