// One pseudo-channel of the simulation HBM model (airfoil.hw.hbm_model.HbmModel): WORDS words of
// 512 bits, two registered read ports (the LD unit's and the instruction fetch's), one write port
// with byte enables, and a registered host read port.  Reads return the word as it was before a
// write in the same cycle, as Amaranth's non-transparent read ports do.
//
// Handwritten rather than an Amaranth Memory because a model's channels hold tens of megabytes:
// Amaranth writes a memory's initial contents into the design word by word (hundreds of
// thousands of 512-bit constants per channel), while here the contents load at time 0 from a
// binary image named by the plusarg +<NAME>=FILE (none: zeros), and the final contents are
// written to +<NAME>_dump=FILE when the simulation ends.  Simulation only.
//
// Binary, not $readmemh/$writememh text: a model's images are about 125 MB, twice that as hex,
// and parsing and printing the hex cost most of 20 s per run.  $fread fills each word from its
// most significant byte, so the image holds each word's bytes reversed
// (airfoil.sim.verilator.write_memory_image); "%u" writes a word least significant byte first,
// so the dump is the channel's bytes in order (read_memory_dump).
module airfoil_hbm_channel #(
    parameter int WORDS = 1024,
    parameter int AW = 10,
    parameter string NAME = "channel0"
) (
    input  logic           clk,
    input  logic           rd0_en,
    input  logic [AW-1:0]  rd0_addr,
    output logic [511:0]   rd0_data,
    input  logic           rd1_en,
    input  logic [AW-1:0]  rd1_addr,
    output logic [511:0]   rd1_data,
    input  logic [63:0]    wr_mask,
    input  logic [AW-1:0]  wr_addr,
    input  logic [511:0]   wr_data,
    input  logic [AW-1:0]  host_addr,
    output logic [511:0]   host_data
);
    logic [511:0] mem [0:WORDS-1];

    initial begin : load
        string image;
        int fd, got;
        for (int i = 0; i < WORDS; i++) mem[i] = '0;
        if ($value$plusargs({NAME, "=%s"}, image)) begin
            fd = $fopen(image, "rb");
            if (fd == 0) $fatal(1, "airfoil_hbm_channel %s: cannot open the image %s", NAME, image);
            got = $fread(mem, fd);
            $fclose(fd);
        end
    end

    final begin : dump
        string image;
        int fd;
        if ($value$plusargs({NAME, "_dump=%s"}, image)) begin
            fd = $fopen(image, "wb");
            if (fd == 0) $fatal(1, "airfoil_hbm_channel %s: cannot write the dump %s", NAME, image);
            for (int i = 0; i < WORDS; i++) $fwrite(fd, "%u", mem[i]);
            $fclose(fd);
        end
    end

    always_ff @(posedge clk) begin
        if (rd0_en) rd0_data <= mem[rd0_addr];
        if (rd1_en) rd1_data <= mem[rd1_addr];
        host_data <= mem[host_addr];
        // most cycles write nothing: skip the 64 byte lanes then (a cost of every cycle in Verilator)
        if (|wr_mask)
            for (int b = 0; b < 64; b++)
                if (wr_mask[b]) mem[wr_addr][8*b +: 8] <= wr_data[8*b +: 8];
    end
endmodule
