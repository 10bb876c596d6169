/** One tensor-parallel rank for test/model/tensor-parallel.test.ts: joins the MLX ring the hostfile describes, loads its
 * shard of the model on the mlx backend and prints {first, out} of a greedy run as JSON.
 * Usage: bun tp-rank.ts MODEL_DIR RANK HOSTFILE STEPS */
import { ModelStage } from '../../src/model/shard.ts'
import { openMlxBackend } from '../../src/tensor/mlx.ts'
import { MlxGroup, setMlxEnvironment } from '../../src/tensor/mlx-distributed.ts'
import { greedy } from './greedy.ts'

const [dir, rank, hostfile, steps] = process.argv.slice(2)
setMlxEnvironment({ MLX_RANK: rank, MLX_HOSTFILE: hostfile })
const group = MlxGroup.join('ring')
const backend = openMlxBackend()
const stage = ModelStage.load(dir!, backend, { slots: 1, maxLen: 32, tp: group.tensorParallel(backend) })
const { first, out } = await greedy(stage, Number(steps))
console.log(JSON.stringify({ rank: group.rank, size: group.size, first: Array.from(first), out }))
group.close()
