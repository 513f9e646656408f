/**
 * Exponential backoff with full jitter: a uniformly random wait below a
 * ceiling that doubles with each failed attempt, up to `max`. Random waits
 * spread the reconnects of every client a node drops, instead of bringing
 * them all back at once.
 */
export function backoffDelay(attempt, backoff = {}, random = Math.random) {
    const initial = backoff.initial ?? 250;
    const max = backoff.max ?? 30_000;
    const ceiling = Math.min(max, initial * 2 ** Math.min(attempt, 30));
    return Math.floor(random() * ceiling);
}
