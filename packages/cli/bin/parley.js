#!/usr/bin/env node
// Launcher: Node 20 cannot run TypeScript itself, so register tsx's loader first, then load the
// CLI (a dynamic import, so it runs after the registration).
import { register } from "tsx/esm/api";

register();
await import("../src/main.ts");
