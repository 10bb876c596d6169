#!/usr/bin/env bun
/** Entry point of the dbcluster binary: the only place that calls process.exit. */
import { runCli } from './cli/main.ts'

process.exit(await runCli(process.argv.slice(2)))
