// A simulation model of the UltraScale+ DSP48E2 primitive (AMD UG579), for Verilator: only the
// subset that Airfoil's DspSlice instantiates (airfoil.hw.dsp_slice, primitive=True), so that the
// Verilog that goes to the board is the Verilog the tests simulate.  Xilinx's own unisim model is
// not on the package registries; this one is written from UG579's description:
//
//   * A, B and D input registers (AREG 0..2, BREG 0..2, DREG 0/1; INMODE[0]/[4] pick A1/B1 when
//     the register is two deep), the pre-adder AD = (INMODE[2] ? D : 0) +/- (INMODE[1] ? 0 : A)
//     (INMODE[3]: subtract) with ADREG 0/1, PREADDINSEL "A" only;
//   * the 27 x 18 signed multiplier on AMULTSEL "A"/"AD" and BMULTSEL "B", MREG 0/1;
//   * the ALU with ALUMODE 0000 (Z + W + X + Y): X/Y both M (01/01) or both 0, Z 0 (000),
//     PCIN (001), P (010) or C (011, CREG 0), W 0 (00); no carry in; PREG 0/1 with CEP; P and PCOUT.
//
// Anything outside the subset stops the simulation at time 0 ($fatal), never a silent mismatch.
// The synchronous resets clear the registers, as on the device.  Simulation only: synthesis sees
// the primitive itself (Yosys' synth_xilinx and Vivado know DSP48E2).
/* verilator lint_off UNUSEDSIGNAL */
/* verilator lint_off UNUSEDPARAM */
module DSP48E2 #(
    parameter int AREG = 1,
    parameter int ACASCREG = 1,
    parameter int BREG = 1,
    parameter int BCASCREG = 1,
    parameter int CREG = 1,
    parameter int DREG = 1,
    parameter int ADREG = 1,
    parameter int MREG = 1,
    parameter int PREG = 1,
    parameter int INMODEREG = 1,
    parameter int OPMODEREG = 1,
    parameter int ALUMODEREG = 1,
    parameter int CARRYINREG = 1,
    parameter int CARRYINSELREG = 1,
    parameter string A_INPUT = "DIRECT",
    parameter string B_INPUT = "DIRECT",
    parameter string AMULTSEL = "A",
    parameter string BMULTSEL = "B",
    parameter string PREADDINSEL = "A",
    parameter string USE_MULT = "MULTIPLY",
    parameter string USE_SIMD = "ONE48",
    parameter string USE_PATTERN_DETECT = "NO_PATDET",
    parameter string USE_WIDEXOR = "FALSE"
) (
    input  logic        CLK,
    input  logic [29:0] A,
    input  logic [29:0] ACIN,
    input  logic [17:0] B,
    input  logic [17:0] BCIN,
    input  logic [47:0] C,
    input  logic [26:0] D,
    input  logic [47:0] PCIN,
    input  logic [4:0]  INMODE,
    input  logic [8:0]  OPMODE,
    input  logic [3:0]  ALUMODE,
    input  logic [2:0]  CARRYINSEL,
    input  logic        CARRYIN,
    input  logic        CARRYCASCIN,
    input  logic        MULTSIGNIN,
    input  logic        CEA1, CEA2, CEAD, CEB1, CEB2, CEC, CED, CEM, CEP,
    input  logic        CEINMODE, CECTRL, CEALUMODE, CECARRYIN,
    input  logic        RSTA, RSTB, RSTC, RSTD, RSTM, RSTP, RSTINMODE, RSTCTRL, RSTALUMODE, RSTALLCARRYIN,
    output logic [47:0] P,
    output logic [47:0] PCOUT,
    output logic [29:0] ACOUT,
    output logic [17:0] BCOUT,
    output logic [3:0]  CARRYOUT,
    output logic        CARRYCASCOUT,
    output logic        MULTSIGNOUT,
    output logic        OVERFLOW,
    output logic        UNDERFLOW,
    output logic        PATTERNDETECT,
    output logic        PATTERNBDETECT,
    output logic [7:0]  XOROUT
);
    initial begin
        if (AREG > 2 || BREG > 2 || DREG > 1 || ADREG > 1 || MREG > 1 || PREG > 1)
            $fatal(1, "DSP48E2 model: register depth out of range");
        if (INMODEREG != 0 || OPMODEREG != 0 || ALUMODEREG != 0 || CREG != 0)
            $fatal(1, "DSP48E2 model: only unregistered INMODE/OPMODE/ALUMODE and C are modelled");
        if (A_INPUT != "DIRECT" || B_INPUT != "DIRECT" || PREADDINSEL != "A" || BMULTSEL != "B"
            || (AMULTSEL != "A" && AMULTSEL != "AD") || USE_MULT != "MULTIPLY" || USE_SIMD != "ONE48"
            || USE_PATTERN_DETECT != "NO_PATDET" || USE_WIDEXOR != "FALSE")
            $fatal(1, "DSP48E2 model: an attribute outside the modelled subset");
    end

    // A, B, D and the pre-adder
    logic [29:0] a1 = '0, a2 = '0;
    logic [17:0] b1 = '0, b2 = '0;
    logic [26:0] d1 = '0, ad1 = '0;
    always_ff @(posedge CLK) begin
        if (RSTA) begin a1 <= '0; a2 <= '0; end
        else begin
            if (CEA1) a1 <= A;
            if (CEA2) a2 <= (AREG == 2) ? a1 : A;
        end
        if (RSTB) begin b1 <= '0; b2 <= '0; end
        else begin
            if (CEB1) b1 <= B;
            if (CEB2) b2 <= (BREG == 2) ? b1 : B;
        end
        if (RSTD) d1 <= '0;
        else if (CED) d1 <= D;
    end
    wire [29:0] a_sel = (AREG == 0) ? A : (AREG == 2 && INMODE[0]) ? a1 : a2;
    wire [17:0] b_sel = (BREG == 0) ? B : (BREG == 2 && INMODE[4]) ? b1 : b2;
    wire [26:0] d_sel = (DREG == 0) ? D : d1;
    wire [26:0] a_pre = INMODE[1] ? 27'd0 : a_sel[26:0];
    wire [26:0] d_pre = INMODE[2] ? d_sel : 27'd0;
    wire [26:0] ad = INMODE[3] ? d_pre - a_pre : d_pre + a_pre;
    always_ff @(posedge CLK) begin
        if (RSTD) ad1 <= '0;
        else if (CEAD) ad1 <= ad;
    end
    wire [26:0] ad_sel = (ADREG == 0) ? ad : ad1;

    // the multiplier
    wire [26:0] mult_a = (AMULTSEL == "AD") ? ad_sel : a_sel[26:0];
    wire signed [44:0] mult = $signed(mult_a) * $signed(b_sel);
    logic signed [44:0] m1 = '0;
    always_ff @(posedge CLK) begin
        if (RSTM) m1 <= '0;
        else if (CEM) m1 <= mult;
    end
    wire signed [44:0] m = (MREG == 0) ? mult : m1;

    // the ALU: Z + W + X + Y with ALUMODE 0000
    logic [47:0] p1 = '0;
    logic bad_mode;
    logic [47:0] xy, z;
    always_comb begin
        bad_mode = ALUMODE != 4'b0000 || OPMODE[8:7] != 2'b00 || CARRYIN || CARRYINSEL != 3'b000;
        case (OPMODE[3:0])
            4'b0101: xy = 48'(m);
            4'b0000: xy = '0;
            default: begin xy = '0; bad_mode = 1'b1; end
        endcase
        case (OPMODE[6:4])
            3'b000: z = '0;
            3'b001: z = PCIN;
            3'b010: z = p1;
            3'b011: z = C;
            default: begin z = '0; bad_mode = 1'b1; end
        endcase
    end
    always_ff @(posedge CLK) begin
        if (bad_mode && !RSTP) $fatal(1, "DSP48E2 model: OPMODE %h / ALUMODE %h / carry outside the modelled subset", OPMODE, ALUMODE);
        if (RSTP) p1 <= '0;
        else if (CEP) p1 <= z + xy;
    end
    assign P = (PREG == 0) ? z + xy : p1;
    assign PCOUT = P;
    assign ACOUT = (ACASCREG == 0) ? A : (AREG == 2 && ACASCREG == 1) ? a1 : a2;
    assign BCOUT = (BCASCREG == 0) ? B : (BREG == 2 && BCASCREG == 1) ? b1 : b2;
    assign CARRYOUT = '0;
    assign CARRYCASCOUT = 1'b0;
    assign MULTSIGNOUT = m[44];
    assign OVERFLOW = 1'b0;
    assign UNDERFLOW = 1'b0;
    assign PATTERNDETECT = 1'b0;
    assign PATTERNBDETECT = 1'b0;
    assign XOROUT = '0;
endmodule
/* verilator lint_on UNUSEDPARAM */
/* verilator lint_on UNUSEDSIGNAL */
