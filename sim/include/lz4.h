/* The two functions of the LZ4 library's stable C API that Verilator's FST writer
 * (include/fstcpp/fstcpp_writer.cpp) calls.  The machine has the library (liblz4.so.1) but not
 * its development header; a waves build (airfoil.sim.verilator.build_component(waves=True))
 * compiles against this declaration and links the installed library. */
#ifndef AIRFOIL_LZ4_H
#define AIRFOIL_LZ4_H
#ifdef __cplusplus
extern "C" {
#endif
int LZ4_compressBound(int inputSize);
int LZ4_compress_default(const char* src, char* dst, int srcSize, int dstCapacity);
#ifdef __cplusplus
}
#endif
#endif
