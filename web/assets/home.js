// Home page: create a room (public creation) and list the listed rooms.

const $ = (id) => document.getElementById(id);

async function createRoom(event) {
  event.preventDefault();
  const error = $('create-error');
  error.hidden = true;
  const body = {
    name: $('room-name').value.trim(),
    visibility: $('room-listed').checked ? 'listed' : 'private',
  };
  const button = event.submitter || document.querySelector('[data-testid=create-room]');
  button.disabled = true;
  try {
    const resp = await fetch('/api/v1/rooms', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
    });
    const data = await resp.json().catch(() => ({}));
    if (!resp.ok) {
      throw new Error(data?.error?.message || `The server said ${resp.status}`);
    }
    $('created-name').textContent = data.name;
    $('invite-link').value = data.invite_url;
    $('host-link').value = data.host_url;
    $('join-as-host').href = data.host_url;
    $('create-form').hidden = true;
    $('created').hidden = false;
    loadPublicRooms();
  } catch (e) {
    error.textContent = e.message;
    error.hidden = false;
  } finally {
    button.disabled = false;
  }
}

async function loadPublicRooms() {
  try {
    const resp = await fetch('/api/v1/public/rooms');
    if (!resp.ok) return;
    const { rooms } = await resp.json();
    const list = $('public-rooms');
    list.replaceChildren(...rooms.map((room) => {
      const li = document.createElement('li');
      li.dataset.roomId = room.id;
      const name = document.createElement('span');
      name.className = 'name';
      name.textContent = room.name;
      const count = document.createElement('span');
      count.className = 'count';
      count.textContent = `${room.participant_count} inside`;
      const join = document.createElement('a');
      join.className = 'btn primary';
      join.href = room.join_url;
      join.textContent = 'Join';
      li.append(name, count, join);
      return li;
    }));
    $('no-rooms').hidden = rooms.length > 0;
  } catch {
    // The list refreshes again shortly.
  }
}

document.addEventListener('click', (event) => {
  const id = event.target?.dataset?.copy;
  if (!id) return;
  const input = $(id);
  navigator.clipboard?.writeText(input.value).catch(() => {});
  input.select();
  event.target.textContent = 'Copied';
  setTimeout(() => { event.target.textContent = 'Copy'; }, 1500);
});

$('create-form').addEventListener('submit', createRoom);
// Disabled in the page until here: a click before this module ran would
// submit the form natively, reload the page and lose what was typed.
document.querySelector('[data-testid=create-room]').disabled = false;
loadPublicRooms();
setInterval(loadPublicRooms, 10000);
