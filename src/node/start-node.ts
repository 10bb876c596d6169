/** startNode: puts a node together for the role it was given — alone, the head or a stage of a pipeline cluster, or a
 * rank of a tensor-parallel group — so that commands only parse flags and serve. */
import { ensureDemoModel } from '../model/demo-model.ts'
import { consola } from 'consola'
import { captureLog } from '../log-ring.ts'
import type { NodeOptions, StartedNode } from './node-options.ts'
import { startPipelineHead } from './pipeline-head.ts'
import { runPipelineStage } from './pipeline-stage.ts'
import { startSingle } from './single.ts'
import { startTensorParallelRank } from './tensor-parallel-rank.ts'

export type { NodeOptions, ServingNode, StartedNode, TensorParallelRole } from './node-options.ts'

export async function startNode(o: NodeOptions): Promise<StartedNode> {
  captureLog() // every node keeps its recent lines for `dbcluster cluster logs`
  // a stage (rank ≥ 1) without a model folder gets its files from the head
  if (o.membership && o.membership.rank > 0) return runPipelineStage(o)
  const dir = o.modelDir ?? (await demoModel())
  if (o.membership) return startPipelineHead(o, dir)
  if (o.tensorParallel) return startTensorParallelRank(o, dir)
  return startSingle(o, dir)
}

/** The synthetic demo model, written on first use: `serve` works on a fresh machine with no model given. */
async function demoModel(): Promise<string> {
  const demo = await ensureDemoModel((line) => consola.start(`creating the demo model: ${line}`))
  consola.info(
    `${demo.created ? 'created' : 'using'} the synthetic demo model at ${demo.dir} (random weights: its text is gibberish; pass --model DIR for a real one)`,
  )
  return demo.dir
}
