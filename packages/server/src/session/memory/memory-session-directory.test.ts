import { runSessionDirectoryConformance } from "../session-directory-conformance.ts";
import { MemorySessionDirectory } from "./memory-session-directory.ts";

runSessionDirectoryConformance("MemorySessionDirectory", () => new MemorySessionDirectory());
