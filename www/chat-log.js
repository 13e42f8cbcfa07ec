// The conversation as the page shows it: one list item per message, assistant replies growing
// token by token. Only rendering lives here; app.js decides what to show.

const WHO = { user: 'You', assistant: 'Model', continuation: 'Continuation' };

export class ChatLog {
  /** @param {HTMLOListElement} list */
  constructor(list) {
    this.list = list;
  }

  clear() {
    this.list.replaceChildren();
  }

  /** Whether the view sits at (or near) its end, so new text should keep it there. */
  atEnd() {
    const l = this.list;
    return l.scrollHeight - l.scrollTop - l.clientHeight < 48;
  }

  /**
   * Adds a message and returns a handle to grow and finish it.
   * @param {'user' | 'assistant' | 'continuation'} role
   */
  add(role, text = '') {
    const item = document.createElement('li');
    item.className = `msg ${role === 'user' ? 'user' : 'assistant'}`;
    item.dataset.testid = `message-${role === 'user' ? 'user' : 'assistant'}`;
    const who = document.createElement('span');
    who.className = 'who';
    who.textContent = WHO[role];
    const body = document.createElement('div');
    body.className = 'body';
    body.dataset.testid = 'message-text';
    const node = document.createTextNode(text);
    body.append(node);
    item.append(who, body);
    const follow = this.atEnd();
    this.list.append(item);
    if (follow) item.scrollIntoView({ block: 'end' });
    const log = this;
    return {
      item,
      get text() { return node.data; },
      /** Appends streamed text; the view follows it unless the reader scrolled away. */
      append(piece) {
        const stay = log.atEnd();
        node.appendData(piece);
        if (stay) log.list.scrollTop = log.list.scrollHeight;
      },
      /** Marks the reply as under way: screen readers wait for it to finish. */
      busy(on) {
        item.setAttribute('aria-busy', String(on));
        item.classList.toggle('streaming', on);
      },
      /** A short note under the message ("stopped", "reached the token limit"). */
      note(text) {
        const n = document.createElement('span');
        n.className = 'tag';
        n.textContent = text;
        item.append(n);
      },
      remove() { item.remove(); },
    };
  }
}
