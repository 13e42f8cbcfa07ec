// Hearth's service worker: it only opens the side panel and wires the context menu to it. The
// model never runs here (a service worker may be stopped at any time); it runs in a Worker that
// the side panel starts.

/** Menu item id -> the panel's task. Chrome groups an extension's items under its name. */
const MENU = {
  'hearth-rewrite': { task: 'rewrite', title: 'Rewrite selection' },
  'hearth-summarise': { task: 'summarise', title: 'Summarise selection' },
  'hearth-continue': { task: 'continue', title: 'Continue selection' },
};

/** A selection handed over from the menu, kept until the panel takes it. */
let pending = null;
const PENDING_FOR_MS = 60_000;

chrome.runtime.onInstalled.addListener(() => {
  chrome.contextMenus.removeAll(() => {
    for (const [id, { title }] of Object.entries(MENU)) {
      chrome.contextMenus.create({ id, title, contexts: ['selection'] });
    }
  });
});

// The toolbar button opens the panel from action.onClicked rather than through
// setPanelBehavior({ openPanelOnActionClick }): only a click that reaches the extension grants
// activeTab, which the panel's "Use page selection" button needs.
chrome.action.onClicked.addListener((tab) => {
  openPanel(tab);
});

/** sidePanel.open must run in the same turn as the user's click, before any await. */
function openPanel(tab) {
  chrome.sidePanel.open({ windowId: tab.windowId }).catch((e) => {
    console.warn(`Hearth could not open its side panel: ${e.message}`);
  });
}

function onMenuClicked(info, tab) {
  const item = MENU[info.menuItemId];
  if (!item) return;
  pending = { task: item.task, text: info.selectionText ?? '', at: Date.now() };
  if (tab) openPanel(tab);
  // A panel that is open already takes the selection now; one that is opening asks for it
  // once it has loaded (the "hearth:take-selection" message below).
  chrome.runtime.sendMessage({ type: 'hearth:selection', task: pending.task, text: pending.text }).then(
    (reply) => { if (reply?.taken) pending = null; },
    () => { /* No panel is listening yet. */ },
  );
}
chrome.contextMenus.onClicked.addListener(onMenuClicked);
// Lets a test drive the menu handler without a real right-click.
self.hearthMenuClicked = onMenuClicked;

chrome.runtime.onMessage.addListener((message, sender, sendResponse) => {
  if (message?.type !== 'hearth:take-selection' || sender.id !== chrome.runtime.id) return false;
  const fresh = pending && Date.now() - pending.at < PENDING_FOR_MS ? pending : null;
  pending = null;
  sendResponse(fresh && { task: fresh.task, text: fresh.text });
  return false;
});
