// What an app gives the client (its options) and what it hears back (its
// events), apart from the client's workings.
export {};
