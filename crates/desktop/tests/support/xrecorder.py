#!/usr/bin/python3
"""A tiny independent X client for the desktop tests.

It opens a window filled with a known test pattern, takes the keyboard focus,
and prints one JSON line per event it receives: key presses and releases
(with the keysym and character *its own* Xlib keymap gives), button events with
root coordinates, and motion. Nothing in here shares code with the daemon, so
the tests check the daemon's effects from outside.

Usage: xrecorder.py X Y WIDTH HEIGHT
"""
import json
import sys

from Xlib import X, XK, display

# Quadrant colours of the test pattern, and one odd colour in a 10x10 square at (5, 5).
PATTERN = {
    "top_left": (255, 0, 0),
    "top_right": (0, 255, 0),
    "bottom_left": (0, 0, 255),
    "bottom_right": (255, 255, 255),
    "marker": (17, 34, 51),
}


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def keysym_char(ks):
    if ks in (XK.XK_Return, XK.XK_KP_Enter):
        return "\n"
    if ks == XK.XK_Tab:
        return "\t"
    if 0x20 <= ks <= 0x7E or 0xA0 <= ks <= 0xFF:
        return chr(ks)
    if ks & 0xFF000000 == 0x01000000:
        return chr(ks & 0xFFFFFF)
    return None


def main():
    x, y, w, h = (int(v) for v in sys.argv[1:5])
    d = display.Display()
    screen = d.screen()
    win = screen.root.create_window(
        x, y, w, h, 0, screen.root_depth,
        event_mask=X.ExposureMask | X.KeyPressMask | X.KeyReleaseMask | X.ButtonPressMask
        | X.ButtonReleaseMask | X.PointerMotionMask | X.StructureNotifyMask,
        background_pixel=screen.black_pixel,
        override_redirect=True,
    )
    win.set_wm_name("xrecorder")
    win.set_wm_class("xrecorder", "XRecorder")
    gcs = {k: win.create_gc(foreground=(r << 16) | (g << 8) | b) for k, (r, g, b) in PATTERN.items()}

    def paint():
        hw, hh = w // 2, h // 2
        win.fill_rectangle(gcs["top_left"], 0, 0, hw, hh)
        win.fill_rectangle(gcs["top_right"], hw, 0, w - hw, hh)
        win.fill_rectangle(gcs["bottom_left"], 0, hh, hw, h - hh)
        win.fill_rectangle(gcs["bottom_right"], hw, hh, w - hw, h - hh)
        win.fill_rectangle(gcs["marker"], 5, 5, 10, 10)

    win.map()
    d.sync()
    announced = False
    while True:
        ev = d.next_event()
        if ev.type == X.MapNotify or ev.type == X.Expose:
            paint()
            win.set_input_focus(X.RevertToParent, X.CurrentTime)
            d.sync()
            if not announced:
                pos = win.translate_coords(screen.root, 0, 0)
                emit({"ready": True, "x": -pos.x, "y": -pos.y, "width": w, "height": h})
                announced = True
        elif ev.type == X.MappingNotify:
            d.refresh_keyboard_mapping(ev)
        elif ev.type in (X.KeyPress, X.KeyRelease):
            index = 1 if ev.state & X.ShiftMask else 0
            ks = d.keycode_to_keysym(ev.detail, index)
            if ks == 0 and index == 1:
                ks = d.keycode_to_keysym(ev.detail, 0)
            emit({
                "type": "key_press" if ev.type == X.KeyPress else "key_release",
                "keycode": ev.detail,
                "state": ev.state,
                "keysym": ks,
                "char": keysym_char(ks) if ev.type == X.KeyPress else None,
            })
        elif ev.type in (X.ButtonPress, X.ButtonRelease):
            emit({
                "type": "button_press" if ev.type == X.ButtonPress else "button_release",
                "button": ev.detail,
                "x": ev.root_x,
                "y": ev.root_y,
                "state": ev.state,
            })
        elif ev.type == X.MotionNotify:
            emit({"type": "motion", "x": ev.root_x, "y": ev.root_y})


if __name__ == "__main__":
    main()
