//go:build amd64 && !purego

#include "textflag.h"

DATA ninf<>+0(SB)/4, $0xff800000
GLOBL ninf<>(SB), RODATA|NOPTR, $4

// func maxAVX2(x *float32, n int) float32
// Four running maxima of 8 lanes; VMAXPS keeps the running maximum (its
// second source) when the score is NaN, so NaN never wins.
TEXT ·maxAVX2(SB), NOSPLIT, $0-20
	MOVQ x+0(FP), SI
	MOVQ n+8(FP), CX
	SHRQ $5, CX
	VBROADCASTSS ninf<>(SB), Y0
	VMOVAPS Y0, Y1
	VMOVAPS Y0, Y2
	VMOVAPS Y0, Y3

maxloop:
	VMOVUPS (SI), Y4
	VMOVUPS 32(SI), Y5
	VMOVUPS 64(SI), Y6
	VMOVUPS 96(SI), Y7
	VMAXPS Y0, Y4, Y0 // Y0 = Y4 > Y0 ? Y4 : Y0
	VMAXPS Y1, Y5, Y1
	VMAXPS Y2, Y6, Y2
	VMAXPS Y3, Y7, Y3
	ADDQ $128, SI
	DECQ CX
	JNZ maxloop

	VMAXPS Y1, Y0, Y0
	VMAXPS Y3, Y2, Y2
	VMAXPS Y2, Y0, Y0
	VEXTRACTF128 $1, Y0, X1
	VMAXPS X1, X0, X0
	VPERMILPS $0x4e, X0, X1
	VMAXPS X1, X0, X0
	VPERMILPS $0xb1, X0, X1
	VMAXPS X1, X0, X0
	VZEROUPPER
	MOVSS X0, ret+16(FP)
	RET

// func firstEqAVX2(x *float32, n int, v float32) int
TEXT ·firstEqAVX2(SB), NOSPLIT, $0-32
	MOVQ x+0(FP), SI
	MOVQ n+8(FP), CX
	VBROADCASTSS v+16(FP), Y15
	XORQ DX, DX // index of the current 8 scores

eq32:
	LEAQ 32(DX), BX
	CMPQ BX, CX
	JGT eq8
	VCMPPS $0, (SI)(DX*4), Y15, Y0 // ordered equal: NaN never
	VCMPPS $0, 32(SI)(DX*4), Y15, Y1
	VCMPPS $0, 64(SI)(DX*4), Y15, Y2
	VCMPPS $0, 96(SI)(DX*4), Y15, Y3
	VORPS Y1, Y0, Y4
	VORPS Y3, Y2, Y5
	VORPS Y5, Y4, Y4
	VMOVMSKPS Y4, AX
	TESTL AX, AX
	JNZ eq8
	MOVQ BX, DX
	JMP eq32

eq8:
	CMPQ DX, CX
	JGE notfound
	VCMPPS $0, (SI)(DX*4), Y15, Y0
	VMOVMSKPS Y0, AX
	TESTL AX, AX
	JNZ found
	ADDQ $8, DX
	JMP eq8

found:
	BSFL AX, AX
	ADDQ AX, DX
	VZEROUPPER
	MOVQ DX, ret+24(FP)
	RET

notfound:
	VZEROUPPER
	MOVQ CX, ret+24(FP)
	RET
