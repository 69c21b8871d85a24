#!/usr/bin/env bash
# Reproduces docs/dialog.png: GIMP 3.0.4 (Debian 13 tree) under Xvfb, the Style Transfer dialog
# open over a two-layer image. Not part of the test run. Needs root and the tree built by
# `tests/gimp/make-tree.sh trixie`.
#   usage: tests/gimp/screenshot.sh [OUT.png]
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
out=$(realpath -m "${1:-$repo/docs/dialog.png}")
root=${NST_TREE_CACHE:-$HOME/.cache/nst-style-transfer}/debian-trixie
[ -f "$root/.nst-tree-ready" ] || { echo "build the tree first: tests/gimp/make-tree.sh trixie" >&2; exit 1; }
work=/tmp/nst-shot-$$
trap 'rm -rf "$root$work"' EXIT
mkdir -p "$root$work/home"
(cd "$repo" && git ls-files -co --exclude-standard -z | xargs -0 cp --parents -t "$root$work" 2>/dev/null) || cp -r "$repo/." "$root$work/"

cat > "$root$work/shot.sh" <<'INNER'
set -e
cd "$1"; export HOME=$1/home
gimp-console-3.0 -i -d -f --batch-interpreter python-fu-eval -b - --quit </dev/null >/dev/null 2>&1 || true
python3 -m nst_engine.testing "$1/weights.pth" >/dev/null
python3 install.py --python /usr/bin/python3 --weights "$1/weights.pth" >/dev/null
# A killed earlier run leaves its lock and socket in the tree; no other X server runs here.
rm -f /tmp/.X99-lock /tmp/.X11-unix/X99
Xvfb :99 -screen 0 1280x860x24 +bs -nolisten tcp >"$1/xvfb.log" 2>&1 & xvfb=$!
for _ in $(seq 100); do [ -S /tmp/.X11-unix/X99 ] && break; sleep 0.2; done
export DISPLAY=:99
cat > "$1/open-dialog.py" <<'PY'
import gi
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl
image = Gimp.Image.new(640, 420, Gimp.ImageBaseType.RGB)
def layer(name, w, h, fn, x=0, y=0):
    l = Gimp.Layer.new(image, name, w, h, Gimp.ImageType.RGBA_IMAGE, 100.0, Gimp.LayerMode.NORMAL)
    image.insert_layer(l, None, 0)
    l.set_offsets(x, y)
    data = bytearray()
    for j in range(h):
        for i in range(w):
            data += bytes(fn(i, j))
    l.get_buffer().set(Gegl.Rectangle.new(0, 0, w, h), "R'G'B'A u8", bytes(data))
    return l
photo = layer("Photo", 640, 420, lambda i, j: (90 + i // 8, 140 + j // 6, 200 - j // 4, 255))
style = layer("Painting", 200, 160, lambda i, j: ((i * 7) % 256, 60, (j * 9) % 256, 255), 420, 240)
image.set_selected_layers([photo])
image.select_ellipse(Gimp.ChannelOps.REPLACE, 80, 60, 300, 220)
Gimp.Display.new(image)
proc = Gimp.get_pdb().lookup_procedure("plug-in-nst-style-transfer")
cfg = proc.create_config()
cfg.set_property("run-mode", Gimp.RunMode.INTERACTIVE)
cfg.set_property("image", image)
cfg.set_core_object_array("drawables", [photo])
res = proc.run(cfg)
with open("result.txt", "w") as f:  # why the dialog closed, when it did
    f.write(f"{res.index(0)} {res.index(1) if res.length() > 1 else ''}\n")
PY
gimp-3.0 -n -d -f --batch-interpreter python-fu-eval -b - < "$1/open-dialog.py" >/dev/null 2>&1 & gimp=$!
sleep "${NST_SHOT_WAIT:-35}"
# No window manager here: raise the dialog above GIMP's window (plain Xlib through ctypes, as
# the tree has no xdotool), then grab the screen.
python3 - > "$1/windows.txt" <<'PY'
import ctypes, ctypes.util
x = ctypes.CDLL(ctypes.util.find_library("X11"))
x.XOpenDisplay.restype = ctypes.c_void_p
d = ctypes.c_void_p(x.XOpenDisplay(b":99"))
root = x.XDefaultRootWindow(d)
r, p, kids, n = ctypes.c_ulong(), ctypes.c_ulong(), ctypes.POINTER(ctypes.c_ulong)(), ctypes.c_uint()
x.XQueryTree(d, ctypes.c_ulong(root), ctypes.byref(r), ctypes.byref(p), ctypes.byref(kids), ctypes.byref(n))
for i in range(n.value):
    name = ctypes.c_char_p()
    if x.XFetchName(d, ctypes.c_ulong(kids[i]), ctypes.byref(name)) and name.value:
        title = name.value.decode("utf-8", "replace")
        print("window:", title)
        if "Style Transfer" in title:
            x.XRaiseWindow(d, ctypes.c_ulong(kids[i]))
x.XSync(d, 0)
PY
cp "$1/windows.txt" /dev/null 2>&1 || true
sleep 2
xwd -root -display :99 | convert xwd:- -crop 490x500+0+0 +repage "$1/dialog.png"  # the dialog sits at 0,0
kill "$gimp" "$xvfb" 2>/dev/null || true
INNER

unshare --mount --pid --fork --propagation private sh -c '
  mount -t proc proc "$1/proc"; mount --rbind /dev "$1/dev"; mount -t tmpfs tmpfs "$1/dev/shm"
  exec chroot "$1" env -i PATH=/usr/bin:/bin LANG=C.UTF-8 sh "$2/shot.sh" "$2"' x "$root" "$work"
cp "$root$work/dialog.png" "$out"
cat "$root$work/windows.txt" "$root$work/result.txt" >&2 2>/dev/null || true
echo "wrote $out"
