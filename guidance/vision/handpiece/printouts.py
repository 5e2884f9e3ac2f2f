"""Print-ready marker sheets at true scale: PNG with its DPI recorded, and a PDF of the physical page size.

A clinic prints these and must be able to check them with a ruler, so every
sheet carries the intended sizes in text and a 100 mm scale bar; the PDF page
is exactly A4 and the image is placed at exactly its physical size (print at
"actual size", not "fit to page").
"""

from __future__ import annotations

import os
import struct
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from guidance.vision.handpiece.designs import (CharucoDesign, ClipDesign, HeadBandDesign, PatchDesign, TRACKING_DICTIONARY,
                                               marker_tile)

A4_MM = (210.0, 297.0)


@dataclass
class Sheet:
    name: str
    image: np.ndarray  # grey uint8
    dpi: int
    description: str


class _Canvas:
    def __init__(self, size_mm: tuple[float, float], dpi: int):
        self.dpi = dpi
        self.img = np.full((self.px(size_mm[1]), self.px(size_mm[0])), 255, np.uint8)

    def px(self, mm: float) -> int:
        return int(round(mm / 25.4 * self.dpi))

    def text(self, s: str, x_mm: float, y_mm: float, height_mm: float = 3.5) -> None:
        scale = self.px(height_mm) / 22.0
        cv2.putText(self.img, s, (self.px(x_mm), self.px(y_mm)), cv2.FONT_HERSHEY_SIMPLEX, scale, 0,
                    max(1, int(scale * 1.6)), cv2.LINE_AA)

    def rect(self, x_mm: float, y_mm: float, w_mm: float, h_mm: float, grey: int = 150) -> None:
        cv2.rectangle(self.img, (self.px(x_mm), self.px(y_mm)), (self.px(x_mm + w_mm), self.px(y_mm + h_mm)),
                      grey, max(1, self.px(0.2)))

    def marker(self, marker_id: int, x_mm: float, y_mm: float, marker_mm: float, plate_mm: float,
               outline: bool = True) -> None:
        """A marker centred on a plate whose top-left corner is at (x, y); the plate outline is the cut line."""
        m = self.px(marker_mm)
        tile = marker_tile(TRACKING_DICTIONARY, marker_id, m, m)
        o = (plate_mm - marker_mm) / 2
        x, y = self.px(x_mm + o), self.px(y_mm + o)
        self.img[y:y + m, x:x + m] = tile
        if outline:
            self.rect(x_mm, y_mm, plate_mm, plate_mm)

    def scale_bar(self, x_mm: float, y_mm: float) -> None:
        x0, y0 = self.px(x_mm), self.px(y_mm)
        cv2.rectangle(self.img, (x0, y0), (self.px(x_mm + 100), self.px(y_mm + 2)), 0, -1)
        for k in range(11):
            xk = self.px(x_mm + 10 * k)
            cv2.line(self.img, (xk, y0), (xk, self.px(y_mm - (4 if k % 5 == 0 else 2.5))), 0, max(1, self.px(0.3)))
        self.text("100 mm: measure this bar; if it is not 100 mm, print again at 'actual size'",
                  x_mm, y_mm + 7, 3.0)


def clip_sheet(dpi: int = 600, design: ClipDesign = ClipDesign()) -> Sheet:
    c = _Canvas(A4_MM, dpi)
    c.text("guidance: handpiece clip markers (DICT_4X4_50)", 15, 20, 5)
    c.text(f"Black square {design.marker_mm:.1f} mm, plate {design.plate_mm:.1f} mm. Cut along the grey lines;", 15, 30)
    c.text(f"stick plate k on clip face k (faces tilted {design.tilt_deg:.0f} deg towards the rear).", 15, 36)
    c.text("Then measure the tip: guidance calibrate handpiece.", 15, 42)
    for k, mid in enumerate(design.ids):
        x = 20 + (k % 2) * 70
        y = 55 + (k // 2) * 55
        c.marker(mid, x, y, design.marker_mm, design.plate_mm)
        c.text(f"id {mid} - face {k}", x, y + design.plate_mm + 7)
    c.scale_bar(20, 180)
    return Sheet("handpiece_clip", c.img, dpi, f"4 clip markers, {design.marker_mm:g} mm")


def head_band_sheet(dpi: int = 600, design: HeadBandDesign = HeadBandDesign()) -> Sheet:
    c = _Canvas(A4_MM, dpi)
    c.text("guidance: head band markers (DICT_4X4_50)", 15, 20, 5)
    c.text(f"Black square {design.marker_mm:.1f} mm, plate {design.plate_mm:.1f} mm, on a rigid band;", 15, 30)
    c.text("id 10 at the forehead, then every 45 deg towards the wearer's left.", 15, 36)
    for k, mid in enumerate(design.ids):
        x = 20 + (k % 3) * 60
        y = 50 + (k // 3) * 55
        c.marker(mid, x, y, design.marker_mm, design.plate_mm)
        c.text(f"id {mid} - {45 * k} deg", x, y + design.plate_mm + 7)
    c.scale_bar(20, 230)
    return Sheet("head_band", c.img, dpi, f"8 band markers, {design.marker_mm:g} mm")


def patch_sheet(dpi: int = 600, design: PatchDesign = PatchDesign()) -> Sheet:
    """Two skin reference patches (one spare) at true scale, with centre ticks and the head arrow."""
    c = _Canvas(A4_MM, dpi)
    w, h = design.size_mm
    c.text("guidance: skin reference patch (DICT_4X4_50, ids "
           f"{design.ids[0]}-{design.ids[-1]})", 15, 20, 5)
    c.text(f"Black square {design.marker_mm:g} mm on {design.pitch_mm:g} mm plates; card {w:g} x {h:g} mm.", 15, 30)
    c.text("Laminate, cut along the grey line, stick flat on the skin with double-sided", 15, 36)
    c.text("medical tape, the arrow towards the client's head (placement: docs/body.md).", 15, 42)
    for k in range(2):
        x0, y0 = 30.0 + k * 90.0, 70.0
        for mid, (centre, _, _) in design.plates().items():
            c.marker(mid, x0 + w / 2 + centre[0] - design.pitch_mm / 2, y0 + h / 2 + centre[1] - design.pitch_mm / 2,
                     design.marker_mm, design.pitch_mm, outline=False)
        c.rect(x0, y0, w, h, grey=110)
        # centre ticks on the border (align with skin marks), and the arrow to the head above the card
        t = max(1, c.px(0.4))
        for (xa, ya, xb, yb) in ((x0 + w / 2, y0, x0 + w / 2, y0 + design.border_mm),
                                 (x0 + w / 2, y0 + h - design.border_mm, x0 + w / 2, y0 + h),
                                 (x0, y0 + h / 2, x0 + design.border_mm, y0 + h / 2),
                                 (x0 + w - design.border_mm, y0 + h / 2, x0 + w, y0 + h / 2)):
            cv2.line(c.img, (c.px(xa), c.px(ya)), (c.px(xb), c.px(yb)), 0, t)
        tip = (c.px(x0 + w / 2), c.px(y0 - 12))
        cv2.arrowedLine(c.img, (tip[0], c.px(y0 - 3)), tip, 0, t, tipLength=0.35)
        c.text("head", x0 + w / 2 + 3, y0 - 7, 3.0)
        c.text(f"u -> (id {design.ids[0]} top-left)", x0, y0 + h + 7, 3.0)
    c.scale_bar(20, 200)
    return Sheet("skin_patch", c.img, dpi, f"skin reference patch, {design.marker_mm:g} mm markers")


def charuco_sheet(dpi: int = 600, design: CharucoDesign = CharucoDesign()) -> Sheet:
    size = (A4_MM[1], A4_MM[0])  # landscape
    c = _Canvas(size, dpi)
    bw, bh = design.size_mm
    x0, y0 = (size[0] - bw) / 2, 14.0
    board = design.board().generateImage((c.px(bw), c.px(bh)), marginSize=0)
    c.img[c.px(y0):c.px(y0) + board.shape[0], c.px(x0):c.px(x0) + board.shape[1]] = board
    c.text(f"guidance: ChArUco calibration board {design.squares_x}x{design.squares_y}, square {design.square_mm:g} mm, "
           f"marker {design.marker_mm:g} mm ({design.dictionary}). Glue flat on card.", 10, 8, 3.2)
    c.scale_bar(x0, y0 + bh + 8)
    return Sheet("charuco_board", c.img, dpi, f"ChArUco {design.squares_x}x{design.squares_y}, {design.square_mm:g} mm squares")


def png_bytes(img: np.ndarray, dpi: int) -> bytes:
    """PNG with a pHYs chunk so viewers and printers know the physical size."""
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise RuntimeError("PNG encoding failed")
    data = buf.tobytes()
    ppm = int(round(dpi / 0.0254))
    payload = struct.pack(">IIB", ppm, ppm, 1)
    chunk = struct.pack(">I", len(payload)) + b"pHYs" + payload + struct.pack(">I", zlib.crc32(b"pHYs" + payload))
    ihdr_end = 8 + 4 + 4 + 13 + 4
    return data[:ihdr_end] + chunk + data[ihdr_end:]


def pdf_bytes(img: np.ndarray, dpi: int) -> bytes:
    """One page whose size is the image's physical size, the greyscale image filling it."""
    h, w = img.shape[:2]
    pw, ph = w / dpi * 72.0, h / dpi * 72.0
    stream = zlib.compress(np.ascontiguousarray(img).tobytes(), 6)
    content = f"q {pw:.4f} 0 0 {ph:.4f} 0 0 cm /Im0 Do Q".encode()
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {pw:.4f} {ph:.4f}] /Resources << /XObject << /Im0 4 0 R >> >> "
        f"/Contents 5 0 R >>".encode(),
        f"<< /Type /XObject /Subtype /Image /Width {w} /Height {h} /ColorSpace /DeviceGray /BitsPerComponent 8 "
        f"/Filter /FlateDecode /Length {len(stream)} >>\nstream\n".encode() + stream + b"\nendstream",
        f"<< /Length {len(content)} >>\nstream\n".encode() + content + b"\nendstream",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objs, start=1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
    for off in offsets:
        out += f"{off:010d} 00000 n \n".encode()
    out += f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; these are ordinary shared files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_sheets(out_dir: str | Path, dpi: int = 600) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for sheet in (clip_sheet(dpi), head_band_sheet(dpi), patch_sheet(dpi), charuco_sheet(dpi)):
        for suffix, data in ((".png", png_bytes(sheet.image, dpi)), (".pdf", pdf_bytes(sheet.image, dpi))):
            path = out / f"{sheet.name}{suffix}"
            _write_atomic(path, data)
            written.append(path)
    return written
