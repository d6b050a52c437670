// DistributedEvaluation: (model, task) measurements made by each task's owner, summed over ranks.
import Core
import Transport

struct DistributedEvaluation {
    /// One measurement: model `model` (an index the caller's `build` understands) on task `task`.
    struct Item {
        var model: Int
        var task: Int
    }

    let communicator: any Communicator
    /// Task index → the rank holding its data (the rank that fine-tuned it).
    let assignment: [Int]

    /// Measures every item of this rank (`build` fills θ of a model once for all its items here,
    /// then `measure(item index, θ)`); a phase agreement reports a failure anywhere; the values
    /// are summed over the ranks (items of other ranks are 0 here).
    func run(_ items: [Item], parameterCount: Int, build: (Int, FloatBuffer) throws -> Void,
             measure: (Int, FloatBuffer) throws -> Double) throws -> [Double] {
        let mine = items.indices.filter { assignment[items[$0].task] == communicator.rank }
        let values: [Double] = try PhaseAgreement.run(communicator) {
            var values = [Double](repeating: 0, count: items.count)
            let parameters = FloatBuffer(count: parameterCount)
            // Items of one model together, models in first-appearance order, so each is built once.
            let itemsOfModel = Dictionary(grouping: mine, by: { items[$0].model })
            var seen = Set<Int>()
            for model in mine.map({ items[$0].model }) where seen.insert(model).inserted {
                try build(model, parameters)
                for index in itemsOfModel[model]! {
                    values[index] = try measure(index, parameters)
                }
            }
            return values
        }
        return try communicator.allReduce(values, .sum)
    }
}
