import heapq

# Dijkstra's shortest paths on a small road map.
# graph[u] = list of (v, distance)

graph = {
    "home": [("school", 4), ("shop", 1)],
    "shop": [("school", 2), ("park", 5)],
    "school": [("park", 1)],
    "park": [],
}


def dijkstra(graph, start):
    dist = {node: float("inf") for node in graph}
    dist[start] = 0
    heap = [(0, start)]
    while heap:
        d, u = heapq.heappop(heap)
        if d > dist[u]:
            continue
        for v, w in graph[u]:
            if d + w < dist[v]:
                dist[v] = d + w
                heapq.heappush(heap, (dist[v], v))
    return dist


print(dijkstra(graph, "home"))
