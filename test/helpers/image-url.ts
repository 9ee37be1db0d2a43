/** The path of an optimizer request, as the loader builds it. */
export const image = (url: string, w: number | string = 384, q: number | string = 75) => `/_next/image?url=${encodeURIComponent(url)}&w=${w}&q=${q}`
