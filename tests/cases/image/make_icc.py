#!/usr/bin/env python3
"""Write the ICC profiles the image unit tests use.

adobe-rgb-1998.icc: an ICC v2 matrix/TRC display profile with the
colorimetry of the Adobe RGB (1998) colour image encoding (Adobe Systems,
2005): primaries R (0.64, 0.33), G (0.21, 0.71), B (0.15, 0.06), white D65,
gamma 563/256, colorants adapted to the D50 PCS with the Bradford transform.

gray-gamma-2.2.icc: an ICC v2 gray display profile (white D50, gamma 2.2), for
gray images that carry a profile.

No such profiles ship with the Debian packages upres builds with, so the unit
tests use these (python3 standard library only; run it from this folder to
regenerate the files byte for byte).
"""
import struct

D65 = (0.3127, 0.3290)
D50_XYZ = (0.9642, 1.0, 0.8249)  # ICC.1:2010 PCS illuminant
PRIMARIES = ((0.64, 0.33), (0.21, 0.71), (0.15, 0.06))
GAMMA = 563 / 256
DESC = "Adobe RGB (1998) compatible (upres test profile)"
COPYRIGHT = "No copyright, use freely"


def xyz(x, y):
    return (x / y, 1.0, (1 - x - y) / y)


def inv3(m):
    a, b, c = m[0]
    d, e, f = m[1]
    g, h, i = m[2]
    det = a * (e * i - f * h) - b * (d * i - f * g) + c * (d * h - e * g)
    return [[(e * i - f * h) / det, (c * h - b * i) / det, (b * f - c * e) / det],
            [(f * g - d * i) / det, (a * i - c * g) / det, (c * d - a * f) / det],
            [(d * h - e * g) / det, (b * g - a * h) / det, (a * e - b * d) / det]]


def mul(m, v):
    return [sum(m[r][k] * v[k] for k in range(3)) for r in range(3)]


def matmul(a, b):
    return [[sum(a[r][k] * b[k][c] for k in range(3)) for c in range(3)] for r in range(3)]


# RGB -> XYZ (D65): columns are the primaries scaled so that RGB 1,1,1 is white
cols = [xyz(*p) for p in PRIMARIES]
m = [[cols[c][r] for c in range(3)] for r in range(3)]
s = mul(inv3(m), xyz(*D65))
rgb2xyz = [[m[r][c] * s[c] for c in range(3)] for r in range(3)]
# Bradford chromatic adaptation D65 -> D50
brad = [[0.8951, 0.2664, -0.1614], [-0.7502, 1.7135, 0.0367], [0.0389, -0.0685, 1.0296]]
src, dst = mul(brad, xyz(*D65)), mul(brad, D50_XYZ)
scale = [[dst[0] / src[0], 0, 0], [0, dst[1] / src[1], 0], [0, 0, dst[2] / src[2]]]
adapt = matmul(inv3(brad), matmul(scale, brad))
colorants = matmul(adapt, rgb2xyz)


def s15(v):
    return struct.pack(">i", int(round(v * 65536)))


def xyz_tag(v):
    return b"XYZ " + b"\0" * 4 + b"".join(s15(c) for c in v)


def desc_tag(text):
    a = text.encode("ascii") + b"\0"
    return (b"desc" + b"\0" * 4 + struct.pack(">I", len(a)) + a + struct.pack(">II", 0, 0) +
            struct.pack(">HB", 0, 0) + b"\0" * 67)


def text_tag(text):
    return b"text" + b"\0" * 4 + text.encode("ascii") + b"\0"


curve = b"curv" + b"\0" * 4 + struct.pack(">IH", 1, int(round(GAMMA * 256))) + b"\0\0"
tags = [(b"desc", desc_tag(DESC)), (b"cprt", text_tag(COPYRIGHT)), (b"wtpt", xyz_tag(D50_XYZ)),
        (b"rXYZ", xyz_tag([colorants[r][0] for r in range(3)])),
        (b"gXYZ", xyz_tag([colorants[r][1] for r in range(3)])),
        (b"bXYZ", xyz_tag([colorants[r][2] for r in range(3)])),
        (b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve)]



def profile(tags, space):
    table_size = 4 + 12 * len(tags)
    offset = 128 + table_size
    entries, body, shared = [], b"", {}
    for sig, data in tags:
        if data in shared:  # the three TRC tags share one curve
            entries.append((sig, shared[data], len(data)))
            continue
        while (offset + len(body)) % 4:
            body += b"\0"
        shared[data] = offset + len(body)
        entries.append((sig, shared[data], len(data)))
        body += data
    while len(body) % 4:
        body += b"\0"
    size = offset + len(body)
    header = (struct.pack(">I", size) + b"\0" * 4 + bytes([2, 0x10, 0, 0]) + b"mntr" + space + b"XYZ " +
              struct.pack(">6H", 2024, 1, 1, 0, 0, 0) + b"acsp" + b"\0" * 4 + struct.pack(">I", 0) +
              b"\0" * 16 + struct.pack(">I", 0) + b"".join(s15(c) for c in D50_XYZ) + b"\0" * 48)
    assert len(header) == 128
    table = struct.pack(">I", len(tags)) + b"".join(sig + struct.pack(">II", o, n) for sig, o, n in entries)
    return header + table + body


with open("adobe-rgb-1998.icc", "wb") as f:
    f.write(profile(tags, b"RGB "))
print("colorants (D50):", [[round(c, 5) for c in row] for row in colorants])

gray_curve = b"curv" + b"\0" * 4 + struct.pack(">IH", 1, int(round(2.2 * 256))) + b"\0\0"
gray_tags = [(b"desc", desc_tag("Gray gamma 2.2 (upres test profile)")), (b"cprt", text_tag(COPYRIGHT)),
             (b"wtpt", xyz_tag(D50_XYZ)), (b"kTRC", gray_curve)]
with open("gray-gamma-2.2.icc", "wb") as f:
    f.write(profile(gray_tags, b"GRAY"))
