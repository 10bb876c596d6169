import { openCpuBackend } from '../../src/tensor/cpu.ts'
import { runBackendSuite } from './backend.suite.ts'

runBackendSuite('cpu', () => openCpuBackend())
