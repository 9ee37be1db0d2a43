import { chromium, type Browser, type Page } from 'playwright-core'

/** Debian's Chromium, driven by playwright-core; never a downloaded browser. */
export function launchBrowser(): Promise<Browser> {
  return chromium.launch({
    executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-background-networking', '--disable-gpu', '--disable-component-update', '--disable-sync', '--no-first-run'],
  })
}

export interface LoadedImage {
  id: string
  currentSrc: string
  srcset: string
  naturalWidth: number
  complete: boolean
}

/** Opens a page, scrolls through it so lazy images load, and reports every <img>. */
export async function loadImages(page: Page, url: string): Promise<LoadedImage[]> {
  await page.goto(url, { waitUntil: 'load' })
  await page.evaluate(async () => {
    for (let y = 0; y < document.body.scrollHeight; y += 400) {
      window.scrollTo(0, y)
      await new Promise((r) => setTimeout(r, 50))
    }
    window.scrollTo(0, document.body.scrollHeight)
  })
  await page.waitForFunction(() => [...document.images].every((img) => img.complete), undefined, { timeout: 60_000 })
  return page.evaluate(() =>
    [...document.images].map((img) => ({
      id: img.id || img.alt,
      currentSrc: img.currentSrc,
      srcset: img.getAttribute('srcset') ?? '',
      naturalWidth: img.naturalWidth,
      complete: img.complete,
    })),
  )
}
