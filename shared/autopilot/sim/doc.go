// Package sim is an in-memory simulator of the Autopilot REST API v1 (the
// contract in shared/autopilot-api.md), used by `segpilot sim`, local runs,
// tests and benchmarks.
//
// A *Server is an http.Handler serving the routes under /v1/ (empty path
// segments are ignored, so "//v1/" and "/v1//contacts" work). It keeps its
// state in memory; Dump returns a deep copy in a deterministic order so a
// test can assert exactly what Autopilot would hold, and Counters tells what
// was answered, including requests per second for pacing tests and how many
// requests each fault class was injected into; Upserted names the contacts
// upserts applied.
//
// Behaviour worth knowing:
//   - Auth: header autopilotapikey; missing → 400 "no key provided", any key
//     other than Options.APIKey → 401. Rejected requests use no rate budget.
//   - Checks run in order: latency fault, auth, rate limit (one token bucket
//     for the key, 429 with Retry-After when Options.RetryAfter), the other
//     faults, then the route.
//   - Upserts are keyed by Email, case-insensitively. Fields not sent are
//     kept; a field sent as null is cleared. "unsubscribed": true
//     unsubscribes and "unsubscribed": false re-subscribes, in single and
//     bulk upserts alike, as Autopilot does; an upsert without the key
//     leaves the subscription as it is.
//     "_NewEmail" renames (400 if another contact has that email).
//     "_autopilot_list" naming an unknown list answers 404 for the whole
//     request. A bulk upsert is all or nothing: more than 100 contacts, any
//     invalid contact, or a rejected email answers 400 and applies nothing.
//   - Contact ids are "person_<16 hex>", list ids "contactlist_<16 hex>",
//     from counters, so runs are reproducible. Pages hold 100 contacts in
//     creation order; the bookmark is the last contact id of the page.
//   - POST /list with an existing title creates a second list, like the
//     real API. GET /lists answers lists in creation order, oldest first
//     (list ids are counters, so id order is the same): Autopilot gives a
//     list no creation date, and segpilot reads that order as age when it
//     adopts the oldest of two lists with one title. DeleteList deletes
//     one, as a person might in Autopilot's app.
//   - Errors answer JSON {"error": "<short>", "message": "<detail>"};
//     unknown routes 404, a known path with another method 405.
//
// # Fault spec
//
// The fault injection, rate limit and counters are shared/simkit's, the
// same for every destination's simulator. ParseFaults reads the CLI's
// --faults flag: comma-separated KEY=VALUE items.
//
//	5xx=RATE            answer 500, 502 or 503 to this share of requests (not applied)
//	429burst=RATE[:N]   with chance RATE a request starts N consecutive 429s (N default 5)
//	latency=DURATION    delay every request by DURATION
//	drop=RATE           close the connection with no answer (not applied)
//	hang=RATE[:DUR]     apply the request, then answer only after DUR (default 5s)
//	reject=REGEXP       400 any upsert holding a matching email; must come last,
//	                    it takes the rest of the spec (a regexp may hold commas)
//
// Example: "5xx=0.05,429burst=0.01:5,latency=20ms,drop=0.01,hang=0.01:3s,reject=@bad\.example$".
// RATE is between 0 and 1. Outcomes come from a PCG generator seeded with
// Options.Seed, drawn the same way for every request, so a given request
// order meets the same faults on every run. In Counters, status 0 means no
// answer reached the client (dropped, or the client left during latency or
// a hang).
package sim
