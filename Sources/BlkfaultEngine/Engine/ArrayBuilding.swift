// Arrays built at the engine's start without the standard library's unspecialised paths
// (issue 7, s8-7a). Its own specialisations of `init(repeating:count:)` (for Int, UInt64,
// Bool, ...) and its `map` (generic over the error type: not specialised here) allocate
// through unspecialised buffer code, which asks the Swift runtime for the storage class's
// metadata on every call (~1,300 instructions); appending to a reserved array is
// specialised at the call and finds that metadata in a cache of its own.

/// `Array(repeating: value, count: count)`.
@inline(__always)
func filledArray<Element>(_ value: Element, count: Int) -> [Element] {
    var array: [Element] = []
    array.reserveCapacity(count)
    for _ in 0..<count { array.append(value) }
    return array
}

/// `source.map(transform)`.
@inline(__always)
func mappedArray<Source, Element>(_ source: [Source], _ transform: (Source) -> Element) -> [Element] {
    var array: [Element] = []
    array.reserveCapacity(source.count)
    for x in source { array.append(transform(x)) }
    return array
}
