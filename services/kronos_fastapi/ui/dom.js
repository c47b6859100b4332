// The page's elements by id, and its message boxes (#message, #backtest-message): shown and hidden.

export const $ = (id) => document.getElementById(id);

export function showMessage(text, box = $("message")) {
  box.textContent = text;
  box.hidden = false;
  // On a phone the message sits above the form: bring it into view (focus stays where it is).
  const { top, bottom } = box.getBoundingClientRect();
  if (top < 0 || bottom > window.innerHeight) box.scrollIntoView({ block: "nearest" });
}

export function hideMessage(box = $("message")) {
  box.hidden = true;
  box.textContent = "";
}
