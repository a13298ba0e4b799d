// Strokes may start on the margin around the image in the label painter (#seg) and the sketch canvas (#edges),
// so a visitor can paint edge to edge. Gradio's ImageEditor (6.x, pixi.js) starts a stroke on pointerdown only
// while its "cursor over the image" flag is set, and sets that flag on pointermove alone (from the pointer's
// position against the image's bounds); a press on the margin is dropped, and moving onto the image then draws
// nothing. Before the editor sees a real press on its canvas, this moves its pointer over the canvas's centre
// (inside the image wherever the editor fits it), so the flag is set and the stroke starts where the press was;
// right after the press the pointer is moved back there, so the brush cursor shows where it is. Strokes outside
// the image are clipped by the editor, as before.
function marginStrokes(editors) {
  let back = null;  // the pointer's true position, once the editor has seen the press
  window.addEventListener("pointerdown", (e) => {
    back = null;
    const canvas = e.target;
    if (!e.isTrusted || e.button !== 0 || !(canvas instanceof HTMLCanvasElement) || !canvas.closest(editors)) return;
    const r = canvas.getBoundingClientRect();
    const move = (x, y) => new PointerEvent("pointermove", {
      bubbles: true, cancelable: true, clientX: x, clientY: y, pointerId: e.pointerId,
      pointerType: e.pointerType, isPrimary: e.isPrimary});
    document.dispatchEvent(move(r.left + r.width / 2, r.top + r.height / 2));  // the editor listens on document
    back = move(e.clientX, e.clientY);
  }, true);  // capture on window: before the editor's own listener on its canvas
  window.addEventListener("pointerdown", () => {
    if (back) document.dispatchEvent(back);
    back = null;
  });
}
