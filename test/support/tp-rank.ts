/** One tensor-parallel rank for the TP tests: joins the MLX ring the hostfile describes, loads its shard of the model
 * on the mlx backend, and prints {rank, size, first, out} of a greedy run as JSON.
 * Usage: bun tp-rank.ts MODEL_DIR RANK HOSTFILE STEPS [same|lead]
 *   same: every rank runs the greedy loop itself; lead: rank 0 drives a TensorParallelPipeline (two sequences, one
 *   after the other) and the others follow it (printing the number of steps they replayed). */
import { followTensorParallel, TensorParallelPipeline } from '../../src/tensor-parallel/pipeline.ts'
import { ModelStage } from '../../src/model/shard.ts'
import { openMlxBackend } from '../../src/tensor/mlx.ts'
import { MlxGroup, setMlxEnvironment } from '../../src/tensor-parallel/mlx-group.ts'
import { greedy } from './greedy.ts'

const [dir, rank, hostfile, steps, mode = 'same'] = process.argv.slice(2)
setMlxEnvironment({ MLX_RANK: rank, MLX_HOSTFILE: hostfile })
const group = MlxGroup.join('ring', 60_000)
const backend = openMlxBackend()
const stage = ModelStage.load(dir!, backend, { slots: 2, maxLen: 32, tp: group.tensorParallel(backend) })
if (mode === 'same') {
  const { first, out } = await greedy(stage, Number(steps))
  console.log(JSON.stringify({ rank: group.rank, size: group.size, first: Array.from(first), out }))
} else if (group.rank === 0) {
  const pipeline = new TensorParallelPipeline(stage, group)
  const a = await greedy(pipeline, Number(steps))
  const b = await greedy(pipeline, Number(steps))
  pipeline.stop()
  console.log(JSON.stringify({ rank: 0, size: group.size, first: Array.from(a.first), out: a.out, again: b.out }))
} else {
  console.log(JSON.stringify({ rank: group.rank, size: group.size, followed: followTensorParallel(stage, group) }))
}
group.close()
