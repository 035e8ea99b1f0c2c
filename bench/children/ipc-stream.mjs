// Child: the process.send baselines. 'stream': send `n` small messages to the parent as
// fast as process.send takes them (the parent times their arrival); 'pingpong': send one,
// wait for the parent's answer, `n` times.
process.on('message', (/** @type {any} */ job) => {
  if (job.mode === 'stream') {
    const start = process.hrtime.bigint()
    process.send?.({ start: String(start) })
    for (let i = 0; i < job.n; i++) process.send?.({ i, op: 'add' })
    return
  }
  if (job.mode === 'pingpong') {
    let i = 0
    const start = process.hrtime.bigint()
    const next = () => {
      if (i === job.n) {
        process.off('message', onAnswer)
        process.send?.({ done: true, ns: String(process.hrtime.bigint() - start) })
        return
      }
      process.send?.({ ping: i++ })
    }
    const onAnswer = (/** @type {any} */ m) => {
      if (m && 'pong' in m) next()
    }
    process.on('message', onAnswer)
    next()
  }
})
