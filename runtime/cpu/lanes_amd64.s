//go:build amd64 && !purego

#include "textflag.h"

// Lane kernels: Q4_0 / Q8_0 weights in the lane layout (lanes.go) × tokens
// in the lane activation layout, AVX-512 VNNI. Dword lane r of a 512-bit
// register is row r of a group of sixteen, so one VPDPBUSD multiplies a
// 4-column piece of sixteen rows by the token's same four columns,
// broadcast from memory; the float work (convert, scale, add) is done once
// per block for sixteen rows, and each lane ends holding its row's result.
//
// Per (row group, block, token) both kernels do the same operations: the
// integer sum (exact, whatever its order) from the token's correction,
// converted to float, times (the rows' scales × the token's scale) added
// to the row's sum by one FMA. So the one-token and the many-token kernel
// give the same bits, and a sequence's results do not depend on what else
// shares its batch.

// Q8_0 weights of a group's block at wp: the eight 4-column pieces, stored
// +128 (unsigned), in Z8..Z15.
#define LW80(wp) \
	VMOVDQU64 32(wp), Z8; \
	VMOVDQU64 96(wp), Z9; \
	VMOVDQU64 160(wp), Z10; \
	VMOVDQU64 224(wp), Z11; \
	VMOVDQU64 288(wp), Z12; \
	VMOVDQU64 352(wp), Z13; \
	VMOVDQU64 416(wp), Z14; \
	VMOVDQU64 480(wp), Z15

// Q4_0 weights of a group's block at wp: the four 4-byte pieces' low
// nibbles (columns 4j..4j+3) in Z8..Z11 and high nibbles (columns
// 16+4j..) in Z12..Z15; Z27 holds 0x0f in every byte.
#define LW40(wp) \
	VMOVDQU64 32(wp), Z8; \
	VMOVDQU64 96(wp), Z9; \
	VMOVDQU64 160(wp), Z10; \
	VMOVDQU64 224(wp), Z11; \
	VPSRLW $4, Z8, Z12; \
	VPSRLW $4, Z9, Z13; \
	VPSRLW $4, Z10, Z14; \
	VPSRLW $4, Z11, Z15; \
	VPANDD Z27, Z8, Z8; \
	VPANDD Z27, Z9, Z9; \
	VPANDD Z27, Z10, Z10; \
	VPANDD Z27, Z11, Z11; \
	VPANDD Z27, Z12, Z12; \
	VPANDD Z27, Z13, Z13; \
	VPANDD Z27, Z14, Z14; \
	VPANDD Z27, Z15, Z15

// For both types Zj+8 pairs with the token's columns 4j..4j+3 (the
// record's dword j): Q4_0's pieces j and j+4 are piece j's two nibbles.

// LPIECE: piece j (weights Zw, the token's dword at 4j) of tokens 0..7,
// whose records are 64 bytes apart at R9, into their sums Z17..Z24.
#define LPIECE(j, Zw) \
	VPDPBUSD.BCST (4*j)(R9), Zw, Z17; \
	VPDPBUSD.BCST (64+4*j)(R9), Zw, Z18; \
	VPDPBUSD.BCST (128+4*j)(R9), Zw, Z19; \
	VPDPBUSD.BCST (192+4*j)(R9), Zw, Z20; \
	VPDPBUSD.BCST (256+4*j)(R9), Zw, Z21; \
	VPDPBUSD.BCST (320+4*j)(R9), Zw, Z22; \
	VPDPBUSD.BCST (384+4*j)(R9), Zw, Z23; \
	VPDPBUSD.BCST (448+4*j)(R9), Zw, Z24

// LSCALE: token t's block sum Zs (integer) into its row sums Zacc: the
// rows' scales Z16 times the token's scale, by one FMA; Zt a temporary.
#define LSCALE(t, Zs, Zacc, Zt) \
	VCVTDQ2PS Zs, Zs; \
	VMULPS.BCST (64*t+48)(R9), Z16, Zt; \
	VFMADD231PS Zt, Zs, Zacc

// LSTORE: the first R12 (at least 1) tokens' row sums Z0..Z7 at R13,
// BX bytes apart.
#define LSTORE(done) \
	MOVQ R13, R15; \
	VMOVUPS Z0, (R15); \
	CMPQ R12, $2; \
	JLT done; \
	ADDQ BX, R15; \
	VMOVUPS Z1, (R15); \
	CMPQ R12, $3; \
	JLT done; \
	ADDQ BX, R15; \
	VMOVUPS Z2, (R15); \
	CMPQ R12, $4; \
	JLT done; \
	ADDQ BX, R15; \
	VMOVUPS Z3, (R15); \
	CMPQ R12, $5; \
	JLT done; \
	ADDQ BX, R15; \
	VMOVUPS Z4, (R15); \
	CMPQ R12, $6; \
	JLT done; \
	ADDQ BX, R15; \
	VMOVUPS Z5, (R15); \
	CMPQ R12, $7; \
	JLT done; \
	ADDQ BX, R15; \
	VMOVUPS Z6, (R15); \
	CMPQ R12, $8; \
	JLT done; \
	ADDQ BX, R15; \
	VMOVUPS Z7, (R15); \
done:

// LROWS_BODY: every group of sixteen rows (gbytes bytes per block) × all n
// tokens, in groups of eight (tokBytes apart at a; block b of a group's
// token t at 512b+64t); the row sums of token t go to out + t*stride
// floats. A group's weights stay in L1 for its later token groups.
#define LROWS_BODY(lw, gbytes, rows_group, rows_tok, rows_block, rows_stored) \
	MOVQ w+0(FP), R8; \
	MOVQ nb+16(FP), CX; \
	MOVQ groups+24(FP), DX; \
	MOVQ out+32(FP), DI; \
	MOVQ stride+40(FP), BX; \
	SHLQ $2, BX; \
	MOVQ tokBytes+56(FP), R14; \
rows_group: \
	MOVQ a+8(FP), SI; \
	MOVQ n+48(FP), R12; \
	MOVQ DI, R13; \
rows_tok: \
	VPXORD Z0, Z0, Z0; \
	VPXORD Z1, Z1, Z1; \
	VPXORD Z2, Z2, Z2; \
	VPXORD Z3, Z3, Z3; \
	VPXORD Z4, Z4, Z4; \
	VPXORD Z5, Z5, Z5; \
	VPXORD Z6, Z6, Z6; \
	VPXORD Z7, Z7, Z7; \
	MOVQ R8, R11; \
	MOVQ SI, R9; \
	MOVQ CX, R10; \
rows_block: \
	VCVTPH2PS (R11), Z16; \
	lw(R11); \
	VPBROADCASTD 32(R9), Z17; \
	VPBROADCASTD 96(R9), Z18; \
	VPBROADCASTD 160(R9), Z19; \
	VPBROADCASTD 224(R9), Z20; \
	VPBROADCASTD 288(R9), Z21; \
	VPBROADCASTD 352(R9), Z22; \
	VPBROADCASTD 416(R9), Z23; \
	VPBROADCASTD 480(R9), Z24; \
	LPIECE(0, Z8); \
	LPIECE(1, Z9); \
	LPIECE(2, Z10); \
	LPIECE(3, Z11); \
	LPIECE(4, Z12); \
	LPIECE(5, Z13); \
	LPIECE(6, Z14); \
	LPIECE(7, Z15); \
	LSCALE(0, Z17, Z0, Z25); \
	LSCALE(1, Z18, Z1, Z26); \
	LSCALE(2, Z19, Z2, Z25); \
	LSCALE(3, Z20, Z3, Z26); \
	LSCALE(4, Z21, Z4, Z25); \
	LSCALE(5, Z22, Z5, Z26); \
	LSCALE(6, Z23, Z6, Z25); \
	LSCALE(7, Z24, Z7, Z26); \
	ADDQ $gbytes, R11; \
	ADDQ $512, R9; \
	DECQ R10; \
	JNZ rows_block; \
	LSTORE(rows_stored); \
	ADDQ R14, SI; \
	LEAQ (R13)(BX*8), R13; \
	SUBQ $8, R12; \
	JGT rows_tok; \
	MOVQ R11, R8; \
	ADDQ $64, DI; \
	DECQ DX; \
	JNZ rows_group

// func q40LaneRows(w, a *byte, nb, groups int, out *float32, stride, n, tokBytes int)
TEXT ·q40LaneRows(SB), NOSPLIT, $0-64
	MOVL $0x0f0f0f0f, AX
	VPBROADCASTD AX, Z27
	LROWS_BODY(LW40, 288, q40rgroup, q40rtok, q40rblock, q40rstored)
	VZEROUPPER
	RET

// func q80LaneRows(w, a *byte, nb, groups int, out *float32, stride, n, tokBytes int)
TEXT ·q80LaneRows(SB), NOSPLIT, $0-64
	LROWS_BODY(LW80, 544, q80rgroup, q80rtok, q80rblock, q80rstored)
	VZEROUPPER
	RET

// LVEC_BODY: every group of sixteen rows × one token (records 64 bytes
// apart at a): out[16g+r]. The integer sum runs in four chains (Z17..Z20)
// so that the VPDPBUSDs do not wait on each other.
#define LVEC_BODY(lw, gbytes, vec_group, vec_block) \
	MOVQ w+0(FP), R11; \
	MOVQ nb+16(FP), CX; \
	MOVQ groups+24(FP), DX; \
	MOVQ out+32(FP), DI; \
vec_group: \
	VPXORD Z0, Z0, Z0; \
	MOVQ a+8(FP), R9; \
	MOVQ CX, R10; \
vec_block: \
	VCVTPH2PS (R11), Z16; \
	lw(R11); \
	VPBROADCASTD 32(R9), Z17; \
	VPXORD Z18, Z18, Z18; \
	VPXORD Z19, Z19, Z19; \
	VPXORD Z20, Z20, Z20; \
	VPDPBUSD.BCST 0(R9), Z8, Z17; \
	VPDPBUSD.BCST 4(R9), Z9, Z18; \
	VPDPBUSD.BCST 8(R9), Z10, Z19; \
	VPDPBUSD.BCST 12(R9), Z11, Z20; \
	VPDPBUSD.BCST 16(R9), Z12, Z17; \
	VPDPBUSD.BCST 20(R9), Z13, Z18; \
	VPDPBUSD.BCST 24(R9), Z14, Z19; \
	VPDPBUSD.BCST 28(R9), Z15, Z20; \
	VPADDD Z18, Z17, Z17; \
	VPADDD Z20, Z19, Z19; \
	VPADDD Z19, Z17, Z17; \
	LSCALE(0, Z17, Z0, Z25); \
	ADDQ $gbytes, R11; \
	ADDQ $64, R9; \
	DECQ R10; \
	JNZ vec_block; \
	VMOVUPS Z0, (DI); \
	ADDQ $64, DI; \
	DECQ DX; \
	JNZ vec_group

// func q40LaneVec(w, a *byte, nb, groups int, out *float32)
TEXT ·q40LaneVec(SB), NOSPLIT, $0-40
	MOVL $0x0f0f0f0f, AX
	VPBROADCASTD AX, Z27
	LVEC_BODY(LW40, 288, q40vgroup, q40vblock)
	VZEROUPPER
	RET

// func q80LaneVec(w, a *byte, nb, groups int, out *float32)
TEXT ·q80LaneVec(SB), NOSPLIT, $0-40
	LVEC_BODY(LW80, 544, q80vgroup, q80vblock)
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
	VPSHUFD $0x4e, X9, X3
	VPADDD X3, X9, X9
	VPSHUFD $0xb1, X9, X3
	VPADDD X3, X9, X9              // the block's Σ qs in every dword
	VPMULLD X10, X9, X9
	VMOVDQU X9, 32(DI)             // -K·Σ qs, four times
	VMOVSS X4, 48(DI)
	JMP qlnext

qlzero:
	VMOVDQU64 Y31, (DI)            // qs
	VMOVDQU64 X31, 32(DI)          // correction
	MOVL $0, 48(DI)                // d

qlnext:
	ADDQ $128, SI
	ADDQ DX, DI
	DECQ CX
	JNZ qlblock
	VZEROUPPER
	RET
