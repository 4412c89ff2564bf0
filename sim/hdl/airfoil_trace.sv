// The instruction trace of the simulation top (airfoil.hw.top.AirfoilTop): with the plusarg
// +trace=FILE, one line per queue event, written from HDL so that no Python runs per cycle:
//
//     <cycle> S <queue> <pc>     the queue's unit took the instruction at <pc>
//     <cycle> D <queue>          the unit finished it (done)
//
// <cycle> counts clock edges since the controller's start (the CYCLES counter's origin), queues
// are isa.Queue's numbers.  Without the plusarg it writes nothing.  Simulation only.
module airfoil_trace #(
    parameter int NQ = 4,
    parameter int PC_BITS = 24
) (
    input  logic                  clk,
    input  logic                  start,
    input  logic [NQ-1:0]         starts,
    input  logic [NQ-1:0]         dones,
    input  logic [NQ*PC_BITS-1:0] pcs
);
    int fd = 0;
    longint cycle = 0;

    initial begin : open_file
        string path;
        if ($value$plusargs("trace=%s", path)) fd = $fopen(path, "w");
    end

    always_ff @(posedge clk) begin
        if (fd != 0) begin
            if (start) cycle <= 0;
            else cycle <= cycle + 1;
            for (int q = 0; q < NQ; q++) begin
                if (starts[q]) $fwrite(fd, "%0d S %0d %0d\n", cycle, q, pcs[q*PC_BITS +: PC_BITS]);
                if (dones[q]) $fwrite(fd, "%0d D %0d\n", cycle, q);
            end
        end
    end

    final begin : close_file
        if (fd != 0) $fclose(fd);
    end
endmodule
