#!/usr/bin/env python3
"""Writes the data-driven cases of tests/unit/nn/param_test.c.

One folder per case: model.param, optional model.bin, and expect:
  line 1  `ok` or `error CODE` (CODE: FORMAT, UNSUPPORTED, IO, NOT_FOUND, ...)
  line 2  optional: a substring the error message must contain
  line 3  optional: `line=N`, the line the error must report
The .bin files are binary, so the cases are generated: edit this file and
run it (python3 make_cases.py) rather than editing a case by hand.
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))

# A tiny model: 1-channel input, 1x1 conv to 3 channels with bias, PReLU.
# weight_data_size 3 is odd, so the fp16 blob carries 2 bytes of padding.
GOOD = """7767517
3 3
Input            in0      0 1 data 0=0 1=0 2=1
Convolution      conv0    1 1 data c0 0=3 1=1 5=1 6=3
PReLU            prelu0   1 1 c0 output 0=3
"""
HALVES = [0x3C00, 0xC000, 0x0001]          # 1.0, -2.0, 2^-24 (subnormal)
FLOATS = [1.0, -2.0, 2.0 ** -24]
BIAS = [0.25, -1.0, 3.0]
SLOPE = [0.125, 0.5, -0.75]
TAG_FP16 = 0x01306B47


def f32(vals):
    return b"".join(struct.pack("<f", v) for v in vals)


BIN_FP16 = (struct.pack("<I", TAG_FP16) + b"".join(struct.pack("<H", h) for h in HALVES)
            + b"\0\0" + f32(BIAS) + f32(SLOPE))
BIN_FP32 = struct.pack("<I", 0) + f32(FLOATS) + f32(BIAS) + f32(SLOPE)

# A model without weights that uses the other layer types.
NO_WEIGHTS = """7767517
7 10
Input        in0     0 1 data
Split        split0  1 4 data a b c d
Concat       cat0    2 1 a b ab 0=0
Concat       cat1    2 1 c d cd
Eltwise      add0    2 1 ab cd e 0=1 -23301=2,5.000000e-01,1
Interp       up0     1 1 e e2 0=3 1=2 2=2.0
BinaryOp     mul0    1 1 e2 output 0=2 1=1 2=0.5
"""


def conv_line(params):
    return "Convolution      conv0    1 1 data c0 " + params


def with_conv(params, head="3 3"):
    lines = GOOD.splitlines()
    lines[1] = head
    lines[3] = conv_line(params)
    return "\n".join(lines) + "\n"


def with_line(n, text, head=None):
    """GOOD with 1-based line n replaced."""
    lines = GOOD.splitlines()
    lines[n - 1] = text
    if head:
        lines[1] = head
    return "\n".join(lines) + "\n"


def eltwise_model(params):
    return ("7767517\n3 3\nInput in0 0 1 data\nSplit split0 1 2 data a b\n"
            "Eltwise add0 2 1 a b output " + params + "\n").replace("3 3", "3 4", 1)


def interp_model(params):
    return "7767517\n2 2\nInput in0 0 1 data\nInterp up0 1 1 data output " + params + "\n"


CASES = {
    # name: (param, bin or None, expect)
    "good_fp16": (GOOD, BIN_FP16, "ok"),
    "good_fp32": (GOOD, BIN_FP32, "ok"),
    "good_crlf_blank_lines_unknown_keys": (
        GOOD.replace("5=1 6=3", "5=1 17=0 30=7 -23320=2,1,2.5 1=2 6=3 1=1")
            .replace("\n", "\r\n").replace("3 3\r\n", "3 3\r\n\r\n  \t\r\n"),
        BIN_FP16, "ok"),
    "good_no_weights": (NO_WEIGHTS, None, "ok"),
    "empty": ("", None, "error FORMAT\nempty file\nline=1"),
    "bad_magic": (GOOD.replace("7767517", "7767518"), BIN_FP16, "error FORMAT\nbad magic\nline=1"),
    "binary_param": ("\x1f\x8b\x08\x00junk\n3 3\n", None, "error FORMAT\nbad magic\nline=1"),
    "truncated_param": (GOOD.replace("3 3", "4 3"), BIN_FP16,
                        "error FORMAT\nthe file ends after 3 layers, line 2 declares 4\nline=5"),
    "too_many_layers": (GOOD.replace("3 3", "2 3"), BIN_FP16,
                        "error FORMAT\nmore layers than the 2 declared\nline=5"),
    "blob_count_high": (GOOD.replace("3 3", "3 4"), BIN_FP16,
                        "error FORMAT\ndeclares 4 blobs, but the layers use 3\nline=2"),
    "blob_count_low": (GOOD.replace("3 3", "3 2"), BIN_FP16,
                       "error FORMAT\none more than the 2 blobs declared\nline=5"),
    "huge_layer_count": (GOOD.replace("3 3", "2000000 3"), None,
                         "error FORMAT\nlayer count '2000000' is not an integer in 1..1000000\nline=2"),
    "header_junk": (GOOD.replace("3 3", "3 3 3"), None, "error FORMAT\nunexpected '3'\nline=2"),
    "blob_produced_twice": (GOOD.replace("3 3", "4 3") + "Convolution conv1 1 1 data c0 0=3 1=1 6=3\n",
                            None, "error FORMAT\nblob 'c0' is produced twice (first by layer 'conv0' on line 4)\nline=6"),
    "undefined_input": (with_line(5, "PReLU prelu0 1 1 nothere output 0=3", "3 4"), BIN_FP16,
                        "error FORMAT\nblob 'nothere' is read but no layer produces it\nline=5"),
    "unknown_layer": (with_line(4, "Deconvolution    conv0    1 1 data c0 0=3 1=1 5=1 6=3"), BIN_FP16,
                      "error UNSUPPORTED\nline 4: layer type 'Deconvolution' is not supported\nline=4"),
    "malformed_kv": (with_conv("0=3 1=1 5 6=3"), BIN_FP16,
                     "error FORMAT\nmalformed parameter '5' (expected id=value)\nline=4"),
    "malformed_kv_empty_value": (with_conv("0=3 1= 5=1 6=3"), BIN_FP16,
                                 "error FORMAT\nmalformed number in parameter '1='\nline=4"),
    "malformed_kv_bad_id": (with_conv("0=3 x=1 5=1 6=3"), BIN_FP16,
                            "error FORMAT\nmalformed parameter id in 'x=1'\nline=4"),
    "malformed_kv_int_overflow": (with_conv("0=99999999999 1=1 5=1 6=3"), BIN_FP16,
                                  "error FORMAT\nmalformed number\nline=4"),
    "float_for_int": (with_conv("0=3.0 1=1 5=1 6=3"), BIN_FP16,
                      "error FORMAT\nnum_output (0=) must be an integer, got '0=3.0'\nline=4"),
    "array_for_int": (with_conv("-23300=1,3 1=1 5=1 6=3"), BIN_FP16,
                      "error FORMAT\nnum_output (0=) must be a single integer, got the array '-23300=1,3'\nline=4"),
    "key_out_of_range": (with_conv("0=3 1=1 5=1 6=3 32=1"), BIN_FP16,
                         "error FORMAT\nparameter id 32 in '32=1' is out of range 0..31\nline=4"),
    "bad_array_short": (with_conv("0=3 1=1 5=1 6=3 9=2 -23310=3,0.1"), BIN_FP16,
                        "error FORMAT\ndeclares 3 values but has 1\nline=4"),
    "bad_array_long": (with_conv("0=3 1=1 5=1 6=3 9=2 -23310=1,0.1,0.2"), BIN_FP16,
                       "error FORMAT\nhas more than the 1 values it declares\nline=4"),
    "bad_array_value": (with_conv("0=3 1=1 5=1 6=3 9=2 -23310=1,0.1x"), BIN_FP16,
                        "error FORMAT\nmalformed or non-finite number\nline=4"),
    "bad_array_length": (with_conv("0=3 1=1 5=1 6=3 9=2 -23310=-1"), BIN_FP16,
                         "error FORMAT\nmalformed array length\nline=4"),
    "array_too_long": (eltwise_model("0=1 -23301=17," + ",".join(["1"] * 17)), None,
                       "error FORMAT\ncoeffs (-23301=) has 17 values, at most 16 are allowed\nline=5"),
    "eltwise_coeff_count": (eltwise_model("0=1 -23301=3,1,1,1"), None,
                            "error FORMAT\ncoeffs (-23301=) has 3 values for 2 inputs\nline=5"),
    "scalar_for_array": (eltwise_model("0=1 1=1"), None, "error FORMAT\ncoeffs must be an array\nline=5"),
    "negative_pad": (with_conv("0=3 1=1 4=-1 5=1 6=3"), BIN_FP16,
                     "error FORMAT\npad_left (4=) must not be negative, got -1\nline=4"),
    "negative_pad_bottom": (with_conv("0=3 1=1 4=1 16=-2 5=1 6=3"), BIN_FP16,
                            "error FORMAT\npad_bottom (16=) must not be negative\nline=4"),
    "same_pad": (with_conv("0=3 1=1 4=-233 5=1 6=3"), BIN_FP16,
                 "error UNSUPPORTED\nSAME padding\nline=4"),
    "zero_kernel": (with_conv("0=3 1=0 5=1 6=3"), BIN_FP16,
                    "error FORMAT\nkernel_w (1=) must be in 1..65536, got 0\nline=4"),
    "zero_num_output": (with_conv("1=1 5=1 6=3"), BIN_FP16,
                        "error FORMAT\nnum_output (0=) must be at least 1, got 0\nline=4"),
    "weight_size_mismatch": (with_conv("0=3 1=1 5=1 6=4"), BIN_FP16,
                             "error FORMAT\nweight_data_size (6=) 4 is not a multiple of num_output * kernel_w * kernel_h = 3 * 1 * 1\nline=4"),
    "bad_activation": (with_conv("0=3 1=1 5=1 6=3 9=7"), BIN_FP16,
                       "error FORMAT\nactivation_type (9=) must be in 0..4, got 7\nline=4"),
    "unsupported_activation": (with_conv("0=3 1=1 5=1 6=3 9=5"), BIN_FP16,
                               "error UNSUPPORTED\nmish\nline=4"),
    "leaky_without_slope": (with_conv("0=3 1=1 5=1 6=3 9=2"), BIN_FP16,
                            "error FORMAT\nneeds its slope\nline=4"),
    "int8_conv": (with_conv("0=3 1=1 5=1 6=3 8=2"), BIN_FP16,
                  "error UNSUPPORTED\nint8 quantized convolution\nline=4"),
    "conv_two_inputs": (with_line(4, "Convolution conv0 2 1 data data c0 0=3 1=1 5=1 6=3"), BIN_FP16,
                        "error FORMAT\ntakes exactly 1 input blob, the line lists 2\nline=4"),
    "prelu_zero_slopes": (with_line(5, "PReLU prelu0 1 1 c0 output 0=0"), BIN_FP16,
                          "error FORMAT\nnum_slope (0=) must be at least 1, got 0\nline=5"),
    "name_too_long": (with_line(5, "PReLU " + "p" * 64 + " 1 1 c0 output 0=3"), BIN_FP16,
                      "error FORMAT\nis longer than 63 bytes\nline=5"),
    "name_63_ok": (with_line(5, "PReLU " + "p" * 63 + " 1 1 c0 output 0=3"), BIN_FP16, "ok"),
    "blob_name_too_long": (GOOD.replace("c0", "c" * 64), BIN_FP16,
                           "error FORMAT\nblob name '" + "c" * 64 + "' is longer than 63 bytes\nline=4"),
    "too_many_blobs_per_layer": (with_line(5, "PReLU prelu0 5000 1 c0 output 0=3"), BIN_FP16,
                                 "error FORMAT\nnumber of input blobs '5000' is not an integer in 0..4096\nline=5"),
    "line_ends_early": (with_line(4, "Convolution conv0 1 1 data"), BIN_FP16,
                        "error FORMAT\nbut ends after 1 names\nline=4"),
    "control_character": (with_line(5, "PReLU pre\x01lu0 1 1 c0 output 0=3"), BIN_FP16,
                          "error FORMAT\ncontrol character 0x01\nline=5"),
    "missing_output": (GOOD.replace("output", "out"), BIN_FP16,
                       "error FORMAT\nno blob is named 'output'\nline=5"),
    "missing_data": (GOOD.replace("data", "input"), BIN_FP16,
                     "error UNSUPPORTED\nthe model input must be the blob 'data'\nline=3"),
    "two_inputs": (GOOD.replace("3 3", "4 3").replace("Convolution", "Input in1 0 1 data\nConvolution"),
                   BIN_FP16, "error FORMAT\nblob 'data' is produced twice\nline=4"),
    "cycle": ("7767517\n3 4\nInput in0 0 1 data\nConcat cat0 2 1 data y x\nSplit split0 1 2 x y output\n",
              None, "error FORMAT\nis part of a cycle\nline=5"),
    "self_loop": (GOOD.replace("c0 output", "output output"), None,
                  "error FORMAT\nis part of a cycle\nline=5"),
    "concat_axis": ("7767517\n3 4\nInput in0 0 1 data\nSplit s 1 2 data a b\nConcat cat0 2 1 a b output 0=1\n",
                    None, "error UNSUPPORTED\nconcat along axis (0=) 1 is not supported\nline=5"),
    "interp_type": (interp_model("0=4 1=2.0 2=2.0"), None,
                    "error FORMAT\nresize_type (0=) must be in 1..3, got 4\nline=4"),
    "interp_type_missing": (interp_model("1=2.0 2=2.0"), None,
                            "error FORMAT\nresize_type (0=) must be in 1..3, got 0\nline=4"),
    "interp_zero_scale": (interp_model("0=2 1=0.0 2=2.0"), None,
                          "error FORMAT\nheight_scale (1=) must be in (0, 65536], got 0\nline=4"),
    "interp_infinite_scale": (interp_model("0=2 1=2.0 2=1e99"), None,
                              "error FORMAT\nmalformed or non-finite number in parameter '2=1e99'\nline=4"),
    "interp_nan_scale": (interp_model("0=2 1=nan 2=2.0"), None,
                         "error FORMAT\nmalformed number in parameter '1=nan'\nline=4"),
    "binaryop_bad_op": ("7767517\n2 2\nInput in0 0 1 data\nBinaryOp b 1 1 data output 0=12 1=1 2=1.0\n",
                        None, "error FORMAT\nop_type (0=) must be in 0..8, got 12\nline=4"),
    "binaryop_arity": ("7767517\n2 2\nInput in0 0 1 data\nBinaryOp b 1 1 data output 0=0\n",
                       None, "error FORMAT\ntakes exactly 2 input blobs, the line lists 1\nline=4"),
    "pixelshuffle_zero": ("7767517\n2 2\nInput in0 0 1 data\nPixelShuffle ps 1 1 data output 0=0\n",
                          None, "error FORMAT\nupscale_factor (0=) must be in 1..65536, got 0\nline=4"),
    "truncated_bin": (GOOD, BIN_FP16[:30], "error FORMAT\n"
                      "layer prelu0 (line 5): slope_data needs 12 bytes (3 fp32 values) at byte offset 24, but only 6 bytes are left"),
    "truncated_bin_tag": (GOOD, BIN_FP16[:2], "error FORMAT\nlayer conv0 (line 4): weight_data needs a 4-byte tag"),
    "empty_bin": (GOOD, None, "error FORMAT\nlayer conv0 (line 4): weight_data needs a 4-byte tag at byte offset 0, but only 0 bytes are left"),
    "wrong_weight_tag": (GOOD, struct.pack("<I", 0x12345678) + BIN_FP16[4:], "error FORMAT\n"
                         "layer conv0 (line 4): unsupported weight tag 0x12345678 at byte offset 0"),
    "extra_bytes_in_bin": (GOOD, BIN_FP16 + b"\0\0\0\0", "error FORMAT\n4 bytes are left over after the last layer"),
    "nonfinite_weight": (GOOD, BIN_FP16[:4] + struct.pack("<H", 0x7C00) + BIN_FP16[6:], "error FORMAT\n"
                         "layer conv0 (line 4): weight_data value 0 (byte offset 4) is not a finite number"),
}


def main():
    for name, (param, binary, expect) in sorted(CASES.items()):
        d = os.path.join(HERE, name)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "model.param"), "wb") as f:
            f.write(param.encode("latin-1"))
        path = os.path.join(d, "model.bin")
        if binary is not None:
            with open(path, "wb") as f:
                f.write(binary)
        elif os.path.exists(path):
            os.remove(path)
        with open(os.path.join(d, "expect"), "w") as f:
            f.write(expect + "\n")


if __name__ == "__main__":
    main()
