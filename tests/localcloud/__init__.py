"""The local cloud's own tests: each stand-in follows the real API it plays, errors included, and the
process plumbing (emulator, functions-framework) behaves as the end-to-end tests rely on."""
