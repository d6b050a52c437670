// SharedSplit: one split of every task (validation or test) cut into chunks of the backbone's cache
// block and spread over all ranks by rows, so that evaluating many models on it (a merge's α grid)
// costs every rank about the same, whatever the tasks' sizes and owners and however many ranks
// there are beyond the tasks.
//
// Each task's owner keeps its first chunks and gives its last ones to the least loaded ranks; one
// allToAll carries them. A chunk is evaluated alike wherever it lands (the same rows, chunked from
// the same first row), so the counts of right predictions, summed over ranks, are the same
// integers for any number of ranks, and the accuracies the same bits.
import Core
import Reporting
import Transport
import Worker

/// The validation and test splits of a run's tasks, shared out once for every merge and for negation.
struct SharedSplits {
    let validation: SharedSplit
    let test: SharedSplit

    init(results: [Int: TrainedTask], entries: [RunReport.TaskEntry], assignment: [Int], backbone: any Backbone,
         communicator: any Communicator) throws {
        func shared(_ split: KeyPath<TaskData, Dataset>, sizes: [Int]) throws -> SharedSplit {
            try SharedSplit(sizes: sizes, owners: assignment, chunk: backbone.cacheBlock, featureCount: backbone.inputCount,
                            communicator: communicator) { results[$0]?.data[keyPath: split] }
        }
        validation = try shared(\.validation, sizes: entries.map(\.validationSamples))
        test = try shared(\.test, sizes: entries.map(\.testSamples))
    }
}

struct SharedSplit {
    /// Rows of a task's split that this rank evaluates: `rows` of `data`.
    struct Piece {
        let data: Dataset
        let rows: Range<Int>
    }

    /// Per task (job order): what this rank evaluates of it, often nothing.
    let pieces: [[Piece]]
    /// Per task: the split's samples.
    let sizes: [Int]

    /// Which rank evaluates each chunk of each task: the owners' chunks, the last ones of the most
    /// loaded ranks moved to the least loaded (lowest rank on ties) while that lowers the larger load.
    static func holders(sizes: [Int], owners: [Int], chunk: Int, ranks: Int) -> [[Int]] {
        var holders = sizes.indices.map { t in [Int](repeating: owners[t], count: (sizes[t] + chunk - 1) / chunk) }
        func rows(_ t: Int, _ k: Int) -> Int { min(chunk, sizes[t] - k * chunk) }
        var load = [Int](repeating: 0, count: ranks)
        for t in sizes.indices { load[owners[t]] += sizes[t] }
        let target = (load.reduce(0, +) + ranks - 1) / ranks
        // From the last chunk of the last task back: an owner keeps a prefix of each of its tasks.
        for t in sizes.indices.reversed() {
            for k in holders[t].indices.reversed() {
                let from = holders[t][k], count = rows(t, k)
                guard load[from] > target, let to = load.indices.min(by: { load[$0] < load[$1] }),
                      load[to] + count < load[from] else { continue }
                holders[t][k] = to
                load[from] -= count
                load[to] += count
            }
        }
        return holders
    }

    /// Task t's chunks as runs of consecutive chunks with one holder each: (holder, rows).
    static func runs(_ holders: [Int], size: Int, chunk: Int) -> [(holder: Int, rows: Range<Int>)] {
        var runs: [(holder: Int, rows: Range<Int>)] = []
        for (k, holder) in holders.enumerated() {
            let rows = (k * chunk)..<min(size, (k + 1) * chunk)
            if let last = runs.last, last.holder == holder {
                runs[runs.count - 1].rows = last.rows.lowerBound..<rows.upperBound
            } else {
                runs.append((holder, rows))
            }
        }
        return runs
    }

    /// Builds this rank's pieces: `owned(t)` is task t's split where this rank owns t (nil elsewhere);
    /// `sizes` every task's split size (the same on every rank).
    init(sizes: [Int], owners: [Int], chunk: Int, featureCount: Int, communicator: any Communicator,
         owned: (Int) -> Dataset?) throws {
        let me = communicator.rank, ranks = communicator.size
        let holders = Self.holders(sizes: sizes, owners: owners, chunk: chunk, ranks: ranks)
        let runs = sizes.indices.map { Self.runs(holders[$0], size: sizes[$0], chunk: chunk) }
        let own: [Dataset?] = sizes.indices.map { t in
            guard owners[t] == me else { return nil }
            guard let data = owned(t) else { preconditionFailure("rank \(me) owns task \(t) but holds no split of it") }
            return data
        }
        // What this rank sends: to each holder of a run of its tasks, the run's inputs then its
        // labels, in task and run order.
        var blocks = [[Float]](repeating: [], count: ranks)
        for t in sizes.indices {
            guard let data = own[t] else { continue }
            for run in runs[t] where run.holder != me {
                blocks[run.holder] += data.inputs[(run.rows.lowerBound * featureCount)..<(run.rows.upperBound * featureCount)]
                blocks[run.holder] += data.labels[run.rows].map(Float.init)
            }
        }
        let received = try communicator.allToAll(blocks)
        var offsets = [Int](repeating: 0, count: ranks)
        var pieces: [[Piece]] = []
        for t in sizes.indices {
            var mine: [Piece] = []
            for run in runs[t] where run.holder == me {
                if let data = own[t] {
                    mine.append(Piece(data: data, rows: run.rows))
                    continue
                }
                let source = owners[t], block = received[source], count = run.rows.count
                let inputs = Array(block[offsets[source]..<(offsets[source] + count * featureCount)])
                offsets[source] += count * featureCount
                let labels = block[offsets[source]..<(offsets[source] + count)].map { Int32($0) }
                offsets[source] += count
                mine.append(Piece(data: Dataset(inputs: inputs, labels: labels, sampleShape: [featureCount]), rows: 0..<count))
            }
            pieces.append(mine)
        }
        self.pieces = pieces
        self.sizes = sizes
    }

    /// One line of models to measure on one task's split: base + α·direction for every α. With
    /// `atBase` (base's own accuracy there, e.g. the task's zero-shot accuracy), α = 0 takes it
    /// without a pass: θ0 + 0·Δ is θ0.
    struct Line {
        let task: Int
        let direction: FloatBuffer
        let alphas: [Double]
        var atBase: Double? = nil

        /// The α this line evaluates.
        var measured: [Double] { atBase == nil ? alphas : alphas.filter { $0 != 0 } }
    }

    /// Each line's accuracies, α by α: every rank counts the right predictions in its share of the
    /// line's task (`Evaluation.correctAlongLine`: with `sharingFirstLayer`, an MLP's first layer
    /// twice, not once per α), an allReduce sums the counts, and every rank holds the same accuracies.
    func accuracies(_ lines: [Line], base: FloatBuffer, heads: [ClassificationHead], backbone: any Backbone,
                    linearizedAround linearization: FloatBuffer?, sharingFirstLayer: Bool = true,
                    communicator: any Communicator) throws -> [[Double]] {
        let counts: [Double] = try PhaseAgreement.run(communicator) {
            lines.flatMap { line in
                var counts = [Double](repeating: 0, count: line.measured.count)
                for piece in pieces[line.task] {
                    let correct = Evaluation.correctAlongLine(
                        backbone: backbone, base: base, direction: line.direction, alphas: line.measured,
                        head: heads[line.task], data: piece.data, rows: piece.rows, linearizedAround: linearization,
                        sharingFirstLayer: sharingFirstLayer)
                    for (a, count) in correct.enumerated() { counts[a] += Double(count) }
                }
                return counts
            }
        }
        var summed = try communicator.allReduce(counts, .sum).makeIterator()
        return lines.map { line in
            let size = Double(sizes[line.task])
            return line.alphas.map { alpha in
                if let atBase = line.atBase, alpha == 0 { return atBase }
                let correct = summed.next()!
                return size > 0 ? correct / size : 0
            }
        }
    }
}
