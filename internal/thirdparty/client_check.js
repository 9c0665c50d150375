'use strict';
// Drives the autopilot-api npm package, unchanged, against the simulator at
// process.argv[2] with the key in AUTOPILOT_API_KEY, and prints one JSON
// object of what it saw. thirdparty_test.go asserts on it and on the
// simulator's state.
const Autopilot = require('autopilot-api');

async function main() {
	const base = process.argv[2];
	const ap = new Autopilot(process.env.AUTOPILOT_API_KEY, base);
	const out = {};

	out.account = (await ap.account.get()).data;

	// Single and bulk upserts, with custom fields.
	await ap.contacts.upsert({ Email: 'one@example.com', FirstName: 'One', custom: { 'string--Tier': 'gold' } });
	const bulk = [];
	for (let i = 0; i < 150; i++) {
		bulk.push({ Email: `bulk${String(i).padStart(3, '0')}@example.com`, LastName: `L${i}` });
	}
	out.bulk = [];
	for (let i = 0; i < bulk.length; i += 100) {
		out.bulk.push((await ap.contacts.upsert(bulk.slice(i, i + 100))).data.contact_ids.length);
	}

	const one = (await ap.contacts.get('one@example.com')).data;
	out.one = { email: one.Email, first: one.FirstName, tier: one.custom && one.custom['string--Tier'] };

	// Page through every contact with bookmarks.
	out.contactPages = 0;
	out.contacts = 0;
	let bookmark;
	do {
		const page = (await ap.contacts.list(bookmark)).data;
		out.contactPages++;
		out.contacts += page.contacts.length;
		bookmark = page.bookmark;
	} while (bookmark);

	out.fields = (await ap.contacts.fields()).data.map(f => f.name).sort();

	// Lists: create, find, membership.
	const list = (await ap.lists.insert('Third party')).data;
	out.listId = list.list_id;
	out.lists = (await ap.lists.list()).data.lists.map(l => l.title);
	await ap.lists.add(list.list_id, 'one@example.com');
	await ap.lists.add(list.list_id, 'bulk000@example.com');
	out.hasOne = (await ap.lists.has(list.list_id, 'one@example.com')).status;
	await ap.lists.remove(list.list_id, 'bulk000@example.com');
	try {
		await ap.lists.has(list.list_id, 'bulk000@example.com');
		out.removedStillMember = true;
	} catch (err) {
		out.removedStatus = err.response && err.response.status;
	}
	const roster = (await ap.lists.roster(list.list_id)).data;
	out.roster = roster.contacts.map(c => c.Email);

	// Unsubscribe, then upsert again: the contact must stay unsubscribed.
	await ap.contacts.unsubscribe('bulk001@example.com');
	await ap.contacts.upsert({ Email: 'bulk001@example.com', FirstName: 'Again' });
	out.unsubscribed = (await ap.contacts.get('bulk001@example.com')).data.unsubscribed;

	await ap.contacts.delete('bulk149@example.com');
	try {
		await ap.contacts.get('bulk149@example.com');
	} catch (err) {
		out.deletedStatus = err.response && err.response.status;
	}

	out.triggers = Array.isArray((await ap.journeys.list()).data.triggers);

	// A wrong key is refused with 401.
	try {
		await new Autopilot('wrong-key', base).account.get();
	} catch (err) {
		out.wrongKeyStatus = err.response && err.response.status;
	}

	process.stdout.write(JSON.stringify(out) + '\n');
}

main().catch(err => {
	const res = err.response;
	process.stderr.write(`${err.message}${res ? ` (${res.status} ${JSON.stringify(res.data)})` : ''}\n`);
	process.exit(1);
});
