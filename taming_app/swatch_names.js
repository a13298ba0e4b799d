// The label painter's colour swatches (#seg) carry no names: each gets its label's name as tooltip and
// accessible name. Picking one closes the colour popup (it would otherwise stay open over the canvas and
// swallow the next stroke), by clicking the Brush tool as a user would.
// names: {"rgb(r, g, b)": label name}, the swatches' background colours as the browser writes them.
function nameSwatches(names) {
  const name = (b) => names[b.style.backgroundColor];
  new MutationObserver(() => {
    document.querySelectorAll("#seg button.color:not([data-named])").forEach((b) => {
      b.dataset.named = "1";
      if (!name(b)) return;
      b.title = name(b);
      b.setAttribute("aria-label", name(b));
      b.addEventListener("click", () => setTimeout(() => {
        const brush = document.querySelector('#seg button[aria-label="Brush"]');
        if (!brush) return;
        for (const type of ["pointerdown", "mousedown", "pointerup", "mouseup"]) {
          brush.dispatchEvent(new PointerEvent(type, {bubbles: true, cancelable: true, pointerType: "mouse"}));
        }
        brush.click();
      }, 0));
    });
  }).observe(document.documentElement, {subtree: true, childList: true});
}
